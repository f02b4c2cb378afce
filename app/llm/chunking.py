"""Cutting a long transcript into parts that fit one call, and naming each part a chapter.

Parts end on segment boundaries and overlap by one segment, so the model keeps the
thread; a last part of a few seconds is not left on its own (:func:`_rebalance`). Token
counts come from the engine (``count_tokens``), so the parts fit the model actually used.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from app.core.schemas import Chapter
from app.llm import checks, extractive
from app.llm.answers import SENTENCE_END, Part
from app.llm.grounding import Seg, content_words, normalize, number_lines
from app.llm.prompts import GROUNDED_SYSTEM_PROMPT, REDUCE_SYSTEM_PROMPT, render_lines, time_span
from app.llm.topics import topic_phrase_candidates

CHAPTERS_MIN_S = 600.0  # recordings this long get chapters
CHAPTER_TARGET_S = 300.0  # and chunks of at most this span, one chapter each
OVERLAP_SEGMENTS = 1  # segments repeated at the start of the next chunk, to keep the thread
# A title made of these words alone names no topic ("Meeting Summary").
GENERIC_TITLE_WORDS = content_words(
    "meeting meetings summary summaries call calls discussion discussions overview notes note "
    "conversation conversations transcript recording part chapter agenda update updates "
    "introduction introductions session topic topics general weekly team group and of the"
)
_PROMPTS = f" {normalize(GROUNDED_SYSTEM_PROMPT + ' ' + REDUCE_SYSTEM_PROMPT)} "

SUBJECT_SHARE = 0.75  # a word in this share of the chapters is the meeting's subject

CountTokens = Callable[[str], int]


# -- chunks ---------------------------------------------------------------------------------


def split_text(text: str, budget: int, count_tokens: CountTokens) -> list[str]:
    """Pack sentences into chunks of at most ``budget`` tokens (words if a sentence is huge)."""
    pieces: list[str] = []
    for sentence in SENTENCE_END.split(text):
        pieces.extend(word_pieces(sentence, budget, count_tokens))
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for piece in pieces:
        n = count_tokens(piece) + 1
        if current and used + n > budget:
            chunks.append(" ".join(current))
            current, used = [], 0
        current.append(piece)
        used += n
    if current:
        chunks.append(" ".join(current))
    return chunks


def word_pieces(text: str, budget: int, count_tokens: CountTokens) -> list[str]:
    """``text`` whole if it fits ``budget``, else runs of words of about half the budget."""
    n = count_tokens(text)
    if n <= budget:
        return [text]
    words = text.split()
    step = max(1, len(words) * budget // (2 * n))
    return [" ".join(words[i : i + step]) for i in range(0, len(words), step)]


def segment_tokens(seg: Seg, count_tokens: CountTokens) -> int:
    """Tokens of a segment as the model sees it: numbered lines, counted here from 1,
    so each line gets two tokens of room for the longer number it has in its chunk."""
    return count_tokens(render_lines([seg])) + 2 * len(number_lines([seg])) + 1


def chunk_segments(
    segs: list[Seg], budget: int, max_span_s: float | None, count_tokens: CountTokens
) -> list[list[Seg]]:
    """Consecutive segments that fit ``budget`` (and ``max_span_s``), overlapping by one."""

    def tokens(seg: Seg) -> int:
        return segment_tokens(seg, count_tokens)

    units: list[tuple[Seg, int]] = []
    for s in segs:  # a segment bigger than a chunk is cut into word pieces, same id
        for piece in word_pieces(s.text, budget // 2, count_tokens):
            units.append((Seg(s.id, s.start, s.end, piece, s.speaker), 0))
    units = [(u, tokens(u)) for u, _ in units]
    chunks: list[list[Seg]] = []
    current: list[tuple[Seg, int]] = []
    carry: list[tuple[Seg, int]] = []
    used = 0
    for unit, n in units:
        span_full = (
            max_span_s is not None
            and current
            and unit.end is not None
            and current[0][0].start is not None
            and unit.end - current[0][0].start > max_span_s
        )
        if current and (used + n > budget or span_full):
            chunks.append([u for u, _ in current])
            carry = current[-OVERLAP_SEGMENTS:] if OVERLAP_SEGMENTS else []
            if sum(c for _, c in carry) + n > budget // 2:
                carry = []
            current, used = list(carry), sum(c for _, c in carry)
        current.append((unit, n))
        used += n
    if current and (not chunks or len(current) > OVERLAP_SEGMENTS):
        chunks.append([u for u, _ in current])
        new_text = sum(n for _, n in current[len(carry) :])
        if len(chunks) > 1 and len(carry) == OVERLAP_SEGMENTS and new_text < budget // 4:
            chunks[-2:] = _rebalance(*chunks[-2:], budget, max_span_s, tokens)
    return chunks


def _rebalance(
    before: list[Seg], last: list[Seg], budget: int, max_span_s: float | None, tokens
) -> list[list[Seg]]:
    """Split the last two chunks evenly, so a few seconds of goodbyes are not a chapter.

    Seen on 43 minutes of calls: a 5-second last chunk became the chapter "Thanks".
    Keeps the two chunks as they were when an even split would not fit.
    """
    units = before + last[OVERLAP_SEGMENTS:]
    counts = [tokens(s) for s in units]
    half, used, cut = sum(counts) / 2, 0, len(units)
    for i, n in enumerate(counts):
        if used + n > half and i > OVERLAP_SEGMENTS:
            cut = i
            break
        used += n
    split = [units] if cut == len(units) else [units[:cut], units[cut - OVERLAP_SEGMENTS :]]
    for part in split:
        start, end = time_span(part)
        too_long = max_span_s is not None and None not in (start, end) and end - start > max_span_s
        if too_long or sum(tokens(s) for s in part) > budget:
            return [before, last]
    return split


# -- chapters -------------------------------------------------------------------------------


def names_a_topic(title: str) -> bool:
    """Not generic ("Meeting Summary"), not one word, not meta, not the prompt echoed back.

    Seen from the 0.5B model: "2 to 6 words naming the topic the", "Thanks".
    """
    words = normalize(title).split()
    if len(words) < 2 or not content_words(title) - GENERIC_TITLE_WORDS:
        return False
    echo = any(f" {' '.join(words[i : i + 3])} " in _PROMPTS for i in range(len(words) - 2))
    return not echo and not checks.is_meta(title)


# What a title says of its speakers before its topic: "Project Manager's talk on using
# tools", "Project Manager and Marketing Discuss Remote Buttons".
_ABOUT_LEAD = frozenset(
    "talk talks presentation presentations discussion discussions discuss discusses "
    "discussing discussed proposal proposals proposes proposed decision decisions update "
    "report reflection response on of about the".split()
)


def without_speakers(title: str, speaker_words: set[str]) -> str:
    """The topic a title names after the speakers it opens with, or the title itself.

    "Industrial Designer's talk on remote control" -> "Remote control". A title that
    says nothing else ("Project Manager's Presentation") comes back empty. A speaker's
    role that is the topic stays ("User Interface Design").
    """
    words = title.split()

    def speaker(word: str) -> bool:
        stems = content_words(word.replace("’", "'").removesuffix("'s"))
        return bool(stems) and stems <= speaker_words

    at, possessive = 0, False
    while at < len(words):
        if speaker(words[at]):
            possessive = words[at].replace("’", "'").endswith("'s")
            at += 1
        elif (
            at
            and words[at].lower() in {"and", "&"}
            and at + 1 < len(words)
            and speaker(words[at + 1])
        ):
            at += 1
        else:
            break
    if at == 0 or not (possessive or (at < len(words) and normalize(words[at]) in _ABOUT_LEAD)):
        return title
    while at < len(words) and normalize(words[at]) in _ABOUT_LEAD:
        at += 1
    rest = " ".join(words[at:])
    return rest[:1].upper() + rest[1:]


def meeting_subject(parts_segs: list[list[Seg]]) -> set[str]:
    """Content words said in nearly every chapter: what the whole meeting is about.

    Seen on AMI design meetings: "Remote control" titled a chapter in three of four
    meetings, and twice in one. A word (nearly) every chapter says names the meeting, not
    the chapter. Needs three chapters to tell.
    """
    if len(parts_segs) < 3:
        return set()
    seen = Counter(w for p in parts_segs for w in content_words(" ".join(s.text for s in p)))
    return {w for w, k in seen.items() if k >= SUBJECT_SHARE * len(parts_segs)}


def chapters_for(parts: list[Part], parts_segs: list[list[Seg]]) -> list[Chapter]:
    """One chapter per part: the model's title if it names a topic, else the part's phrase.

    Never a comma-joined keyword list ("Yellow, fashion, control"): a person names a topic.
    Never an earlier chapter's title, nor only the meeting's subject, when the part's own
    phrases offer another.
    """
    candidates = topic_phrase_candidates(parts_segs)
    subject = meeting_subject(parts_segs)
    # "Project Manager's Meeting" names who spoke, not what about (seen on AMI).
    speakers = content_words(" ".join({s.speaker or "" for p in parts_segs for s in p}))
    out: list[Chapter] = []

    def repeated(title: str) -> bool:
        return any(c.title.lower() == title.lower() for c in out)

    def fresh(title: str) -> bool:
        about = content_words(title) - GENERIC_TITLE_WORDS - speakers
        return bool(about - subject) and not repeated(title)

    for number, (part, phrases) in enumerate(zip(parts, candidates, strict=True), 1):
        if part.start is None:
            continue
        gist = extractive.first_sentence(part.summary)
        title = " ".join(part.title.strip().rstrip(".").split()[:6])
        title = without_speakers(title, speakers)
        # "Project Manager: How We Can Use": a speaker's label and a fragment, not a topic.
        named = names_a_topic(title) and "," not in title and ":" not in title
        about = content_words(title) - GENERIC_TITLE_WORDS - speakers
        if not (named and fresh(title)):
            # a phrase of the part's own that says more; else the model's title, if only
            # the meeting's subject, unless it repeats a title or names nothing
            better = next((p for p in phrases if fresh(p)), "")
            if better or not named or not about or repeated(title):
                title = better or (phrases[0] if phrases else "")
        title = title or " ".join(gist.split()[:6]) or f"Part {number}"
        out.append(Chapter(start=part.start, end=part.end or part.start, title=title, gist=gist))
    return out
