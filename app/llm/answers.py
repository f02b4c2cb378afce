"""What comes back from the model: its JSON read, its items checked into a :class:`Part`.

An item is kept only if a transcript line backs it (:mod:`app.llm.grounding`); a looping
summary is cut; near-duplicate items are merged; a part the model left without grounded
points is filled with central sentences (:mod:`app.llm.extractive`). No model is called
here, so every rule can be tested on a canned answer.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field

from pydantic import ValidationError

from app.core.schemas import Evidence, Summary
from app.llm import checks, extractive
from app.llm.grounding import (
    Line,
    Seg,
    TranscriptIndex,
    content_words,
    has_commitment,
    normalize,
    stem,
    supports,
)
from app.llm.prompts import (
    GROUNDED_SYSTEM_PROMPT,
    MAX_POINTS,
    RESTATE_EXAMPLE,
    RESTATE_SYSTEM_PROMPT,
    time_span,
)
from app.llm.voice import LABEL as _LABEL
from app.llm.voice import as_an_item, reported, speaks_as_a_speaker, without_fillers

NO_SPEECH = Summary(
    summary="No speech was detected in the audio.", key_points=[], action_items=[], method="none"
)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

MAX_ITEM_WORDS = 30
MIN_POINT_WORDS = 3  # content words a key point needs to say anything ("Hopefully that works.")
MIN_POINTS = 2  # fewer grounded points from the model: central sentences fill up to 3
EXTRACTIVE_POINTS = "llm_extractive_points"  # method: LLM summary, some points extractive


@dataclass
class SummaryStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    retries: int = 0
    dropped: int = 0
    repaired: int = 0


@dataclass
class Item:
    text: str
    evidence: Evidence


@dataclass
class Part:
    """One call's checked result (a whole short transcript, or one chunk)."""

    summary: str
    points: list[Item] = field(default_factory=list)
    actions: list[Item] = field(default_factory=list)
    title: str = ""
    method: str = "llm"
    start: float | None = None
    end: float | None = None
    copied: int = 0  # points dropped for only repeating their line


# -- reading the JSON ---------------------------------------------------------------------


def parse_json(text: str) -> dict:
    """The model's JSON, repaired if ``max_tokens`` cut it off; {} if it is not JSON.

    An item the cut fell inside ("Plastic is cheap) is half a sentence: it goes, and
    the items before it stay. A summary cut off mid-sentence loses that sentence in
    :func:`trim_summary`.
    """
    try:
        data = json.loads(text)
        return data if isinstance(data, dict) else {}
    except ValueError:
        pass
    kept, data = _closed(text)
    if not isinstance(data, dict):
        return {}
    inside_item = len(_closing(kept)) > 2  # closed by '"}]}' or '}]}', not ']}'
    last = next(reversed(data), None)
    if inside_item and isinstance(data.get(last), list) and data[last]:
        data[last] = data[last][:-1]
    return data


def parse_summary(text: str) -> Summary:
    """Grammar-constrained output parses; a cut-off one (max tokens) is repaired, not fatal."""
    try:
        data = Summary.model_validate_json(text).model_dump()
    except ValidationError:
        try:
            data = json.loads(_close_json(text))
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError:
            return Summary(summary=text.strip()[:2000], key_points=[], action_items=[])
    return Summary(
        summary=str(data.get("summary", "")).strip(),
        key_points=_unique(data.get("key_points", [])),
        action_items=_unique(data.get("action_items", [])),
    )


def _unique(items) -> list[str]:
    """Drop blanks and repeats: small models like to say the same thing twice."""
    seen: set[str] = set()
    out: list[str] = []
    for item in items if isinstance(items, list) else []:
        text = str(item).strip()
        key = text.lower().rstrip(".")
        if text and key not in seen:
            seen.add(key)
            out.append(text)
    return out


def _closed(text: str, tries: int = 40) -> tuple[str, object]:
    """``text`` closed, cut back to a comma or an opening bracket where the cut fell
    inside a key (``{"line": 2, "ta``): what was closed, and its value (or None)."""
    end = len(text)
    for _ in range(tries):
        closed = _close_json(text[:end])
        try:
            return text[:end], json.loads(closed)
        except ValueError:
            end = max(text.rfind(",", 0, end), text.rfind("[", 0, end) + 1, 0)
            if end <= 0:
                break
    return "", None


def _close_json(text: str) -> str:
    """Close the strings, arrays and objects a truncated JSON document left open."""
    return text.rstrip().rstrip(",") + _closing(text)


def _closing(text: str) -> str:
    """What closes the strings, arrays and objects ``text`` left open."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    return ('"' if in_string else "") + "".join(reversed(stack))


# -- grounding the items ------------------------------------------------------------------


def ground_answer(
    data: dict, index: TranscriptIndex, stats: SummaryStats, lines: list[Line] | None = None
) -> Part:
    """Keep the items a transcript line supports; repair a miscounted citation, drop the rest.

    ``lines``: the numbered lines the model saw; its items cite them by ``line``. An item
    that quotes instead (``quote``) is grounded on the quote.
    """
    summary, unsupported = supported_sentences(trim_summary(str(data.get("summary") or "")), index)
    stats.dropped += unsupported
    part = Part(summary=summary, title=str(data.get("title") or ""))
    by_number = {x.n: x for x in lines or []}
    for kind, label in (("key_points", "point"), ("action_items", "task")):
        items = data.get(kind)
        for raw in items if isinstance(items, list) else []:
            if not isinstance(raw, dict):
                stats.dropped += 1
                continue
            text = extractive.first_sentence(str(raw.get(label) or "").strip(), MAX_ITEM_WORDS)
            is_action = kind == "action_items"
            cited = raw.get("line")
            if isinstance(cited, int) and by_number:
                evidence, repaired = _ground_on_lines(text, cited, by_number, index, is_action)
            else:
                evidence, repaired = _ground_on_quote(raw, text, index)
            if evidence is None or (is_action and not has_commitment(evidence.quote)):
                stats.dropped += 1
                continue
            if len(normalize(text).split()) < 2:  # one-word text: the quote says more
                text = evidence.quote
            if not is_action and len(content_words(text)) < MIN_POINT_WORDS:  # "Make sense."
                stats.dropped += 1
                continue
            if echoes_prompt(text):  # seen: "…, naming the person when one was named."
                stats.dropped += 1
                continue
            if not is_action and copies_line(text, evidence.quote, index.speaker_words):
                stats.dropped += 1
                part.copied += 1
                continue
            stats.repaired += int(repaired)
            text = as_an_item(reported(text, _owner(text, evidence, index)), is_action)
            if not text:  # "I proposed that I make …", an "I" nobody owns: not an item
                stats.dropped += 1
                part.copied += int(not is_action)
                continue
            (part.actions if is_action else part.points).append(Item(text, evidence))
    part.points = dedup(part.points)
    part.actions = dedup(part.actions)
    return part


def _speaker_of(evidence: Evidence, index: TranscriptIndex) -> str | None:
    """Who said the evidence's first words: the owner of an "I'll …" item."""
    seg = index.by_id.get(evidence.segments[0]) if evidence.segments else None
    return seg.speaker if seg else None


_WILL = r"(?:['’]ll| will| am going to|['’]m going to| shall)"
_I_WILL = re.compile(rf"^I{_WILL}\s+(\w+)", re.I)


def _owner(text: str, evidence: Evidence, index: TranscriptIndex) -> str | None:
    """The speaker an item's "I" stands for, when it is the speaker's.

    "I" is the speaker only in the speaker's own words: a copy of the line, or the same
    "I'll <verb>" as the line ("I will take notes …" for "I'll take notes during this
    meeting so uh that …"). The model also writes "I'll ask the Project Manager to …" as
    itself: that "I" names nobody, and neither does one that would make the speaker act
    on themselves ("Project Manager will call the Project Manager").
    """
    speaker = _speaker_of(evidence, index)
    if not speaker or speaker.lower() in text.lower():
        return None
    if copies_line(text, evidence.quote, index.speaker_words):
        return speaker
    item = _I_WILL.match(text.strip())
    if item is None:
        return None
    verb = re.escape(item.group(1))
    said = " ".join(index.by_id[i].text for i in evidence.segments if i in index.by_id)
    line = without_fillers(said)  # "I'll uh take notes", "I'll just take notes"
    same = re.search(rf"\bI{_WILL}\s+(?:\w+\s+){{0,2}}{verb}\b", line, re.I)
    return speaker if same else None


# Our instructions, and the restatement's worked example: on a 2,100-token QMSum topic the
# 0.5B model answered with the example's answer word for word.
_PROMPT_TEXT = (
    f" {normalize(' '.join([GROUNDED_SYSTEM_PROMPT, RESTATE_SYSTEM_PROMPT, *RESTATE_EXAMPLE]))} "
)


def echoes_prompt(text: str, n: int = 5) -> bool:
    """The item repeats five words of our instructions: the model echoed the prompt."""
    words = normalize(text).split()
    return any(f" {' '.join(words[i : i + n])} " in _PROMPT_TEXT for i in range(len(words) - n + 1))


COPY_SHARE = 0.8  # a point whose words are this share one run of its line repeats it


def _is_name(word: str, names: set[str] | frozenset[str]) -> bool:
    """``word`` is one of the names, also with a possessive or plural "s"."""
    return word in names or word.removesuffix("'s") in names or word.removesuffix("s") in names


def without_speaker(words: list[str], speaker_words: set[str] | frozenset[str]) -> list[str]:
    """The words after a leading speaker label ("Project Manager('s)", seen on AMI)."""
    at = 0
    while at < len(words) and _is_name(words[at], speaker_words):
        at += 1
    return words[at:] if at < len(words) else words


def copies_line(
    text: str, quote: str, speaker_words: set[str] | frozenset[str] = frozenset()
) -> bool:
    """The point only repeats its line: most of its words are one contiguous run of it.

    Seen on three AMI design meetings: 19 of 24 key points were whole transcript lines
    ("I'm not 100% sure, but I'm not having crashes at the moment."). Those belong to
    the transcript's highlights, not to a summary. A speaker's name in front does not
    make a copy new ("Project Manager there's the minutes from the first meeting.").
    """
    words = without_speaker(normalize(text).split(), speaker_words)
    line = normalize(quote).split()
    if not words:
        return False
    match = difflib.SequenceMatcher(None, words, line, autojunk=False)
    return match.find_longest_match(0, len(words), 0, len(line)).size >= COPY_SHARE * len(words)


def points_from_summary(part: Part, lines: list[Line], index: TranscriptIndex) -> Part:
    """Add the part's own summary sentences as key points, each on the line that backs it.

    The model's points are often copies of a line (dropped); its summary sentences are
    written and already checked. A sentence no line backs (the cited-line rule of
    :func:`supports`), or that copies its line, is left out; so is one that repeats a point.
    """
    by_number = {x.n: x for x in lines}
    extra = []
    for sentence in SENTENCE_END.split(part.summary):
        text = extractive.first_sentence(sentence.strip(), MAX_ITEM_WORDS)
        if len(content_words(text)) < MIN_POINT_WORDS or speaks_as_a_speaker(text):
            continue
        evidence, _ = _ground_on_lines(text, -1, by_number, index, False)
        if evidence is None:  # not strictly: the line sharing the most words, if it backs it
            best = max(lines, key=lambda x: len(content_words(text) & content_words(x.text)))
            evidence = index.line_evidence(best) if supports(text, best.text) else None
        if evidence is not None and not copies_line(text, evidence.quote, index.speaker_words):
            extra.append(Item(text, evidence))
    part.points = dedup(part.points + extra)
    return part


def _ground_on_lines(
    text: str, cited: int, by_number: dict[int, Line], index: TranscriptIndex, action: bool
) -> tuple[Evidence | None, bool]:
    """The cited line if it supports ``text``, else a neighbour, else the best line found."""
    if not text:
        return None, False

    def usable(line: Line) -> bool:
        return not action or has_commitment(line.text)

    for n in (cited, cited - 1, cited + 1, cited - 2, cited + 2):
        line = by_number.get(n)
        if line and usable(line) and supports(text, line.text):
            return index.line_evidence(line), n != cited
    found = [x for x in by_number.values() if usable(x) and supports(text, x.text, strict=True)]
    if found:
        best = max(found, key=lambda x: (len(content_words(text) & content_words(x.text)), -x.n))
        return index.line_evidence(best), True
    return None, False


def _ground_on_quote(raw: dict, text: str, index: TranscriptIndex):
    quote = str(raw.get("quote") or "").strip()
    near = raw.get("segment") if isinstance(raw.get("segment"), int) else None
    evidence, repaired = index.ground(quote, near) if quote else (None, False)
    if evidence is None and text:  # the model may have put the quote in the text
        evidence, repaired = index.ground(text, near)
    return evidence, repaired


def trim_summary(text: str, max_sentences: int = 5) -> str:
    """Cut a looping summary at its first repeated sentence, and a cut-off last sentence.

    Greedy decoding of a small model falls into loops ("Diane and Sheila are in Chicago.
    ... Diane and Sheila are in Chicago."); what came before the loop is often usable.
    """
    kept: list[str] = []
    seen: list[set[tuple[str, ...]]] = []
    sentences = [x for x in SENTENCE_END.split(text.strip()) if x.strip()]
    for n, sentence in enumerate(sentences):
        words = normalize(sentence).split()
        grams = {tuple(words[i : i + 3]) for i in range(max(1, len(words) - 2))}
        if any(len(grams & g) > 0.5 * len(grams) for g in seen):
            break
        complete = sentence.rstrip().endswith((".", "!", "?"))
        if not complete and n == len(sentences) - 1 and kept:
            break
        kept.append(sentence.strip())
        seen.append(grams)
        if len(kept) == max_sentences:
            break
    return " ".join(kept)


MIN_SENTENCE_SUPPORT = 0.34  # share of a sentence's content words that someone said


def without_label(sentence: str) -> str:
    """The words after a leading label ("Marketing: Just put it on the desk.")."""
    return _LABEL.sub("", sentence, count=1)


def says_nothing(sentence: str) -> bool:
    """A labelled sentence whose words after the label say nothing.

    Seen in the 0.5B model's topic summaries of an AMI meeting: "Project Manager's
    Meeting: Okay." The label's words made it look supported.
    """
    label = _LABEL.match(sentence)
    if not label or len(label.group(0).split()) > 5:
        return False
    return len(content_words(sentence[label.end() :])) < 2


# A Title Case run glued to the sentence after it, with no stop between them.
_GLUED_HEADING = re.compile(
    r"^(?:[A-Z][\w'’-]*\s+(?:(?:and|of|&)\s+)?){2,8}"
    r"(?=(?:The|A|An|In|This|They|We|He|She|It|Both|All|Everyone)\s)"
)
_DOUBLED_NAME = re.compile(r"\b([A-Z][\w'’-]*(?: [A-Z][\w'’-]*)*) and \1\b")


def without_heading(sentence: str) -> str:
    """The sentence without a heading the model wrote in front of it.

    Seen in the 0.5B model's topic summaries of AMI meetings: "Project Manager and User
    Interface Summary The speakers discuss ..."; no prose puts "Summary The" together.
    """
    return _GLUED_HEADING.sub("", sentence, count=1)


def without_heading_label(sentence: str, speaker_words: set[str] | frozenset[str]) -> str:
    """The sentence without a label in front that names no speaker.

    Seen in the 0.5B model's topic summaries of AMI meetings: "Project Manager's Meeting:
    Project Manager finds the minutes …". A speaker's own label ("Marketing: …") stays:
    it marks a quotation, which :func:`reported` rewrites or the summary leaves out.
    """
    label = _LABEL.match(sentence)
    if not label or len(label.group(1).split()) > 5:
        return sentence
    words = normalize(label.group(1)).split()
    if words and all(_is_name(w, speaker_words) for w in words):
        return sentence
    rest = sentence[label.end() :]
    if len(content_words(rest)) < 2:  # "Project Manager's Meeting: Okay.": says nothing
        return sentence
    return rest[:1].upper() + rest[1:]


def supported_sentences(text: str, index: TranscriptIndex) -> tuple[str, int]:
    """Drop the summary's sentences whose topic words were mostly never said.

    Seen from the 0.5B model on an 11-second clip: a right first sentence, then "This is a
    common topic in discussions about global issues.", none of whose words were spoken.
    Returns the kept text and how many sentences went.
    """
    said = {stem(w) for w in index.vocabulary}
    kept: list[str] = []
    dropped = 0
    for sentence in (x.strip() for x in SENTENCE_END.split(text.strip()) if x.strip()):
        # "Marketing and Marketing discussed ..." (AMI topic summaries): one name, once.
        sentence = without_heading_label(without_heading(sentence), index.speaker_words)
        sentence = reported(_DOUBLED_NAME.sub(r"\1", sentence))
        words = content_words(sentence)
        if len(words) >= 3 and len(words & said) < MIN_SENTENCE_SUPPORT * len(words):
            dropped += 1
            continue
        if says_nothing(sentence) or echoes_prompt(sentence) or checks.is_heading(sentence):
            dropped += 1
            continue
        kept.append(sentence)
    return " ".join(kept), dropped


# -- merging items ------------------------------------------------------------------------


def _words(text: str) -> set[str]:
    return set(normalize(text).split())


def word_overlap(a: str, b: str) -> float:
    """Shared words over all words of the two texts (Jaccard)."""
    wa, wb = _words(a), _words(b)
    return len(wa & wb) / max(1, len(wa | wb))


def _same(a: Item, b: Item) -> bool:
    """Two items say the same thing: same text, or overlapping evidence with similar words."""
    jaccard = word_overlap(a.text, b.text)
    shared_segments = set(a.evidence.segments) & set(b.evidence.segments)
    return (
        jaccard >= 0.6
        or normalize(a.evidence.quote) == normalize(b.evidence.quote)
        or (bool(shared_segments) and jaccard >= 0.3)
    )


def dedup(items: list[Item]) -> list[Item]:
    out: list[Item] = []
    for item in items:
        if not any(_same(item, kept) for kept in out):
            out.append(item)
    return out


def pick_round_robin(groups: list[list[Item]], limit: int) -> list[Item]:
    """Take items chunk by chunk in turn, so a long recording's later parts are represented."""
    out: list[Item] = []
    depth = 0
    while len(out) < limit and any(depth < len(g) for g in groups):
        for g in groups:
            if depth < len(g) and len(out) < limit and not any(_same(g[depth], k) for k in out):
                out.append(g[depth])
        depth += 1
    out.sort(key=lambda i: (i.evidence.start or 0.0, i.evidence.segments[:1]))
    return out


# -- filling in and handing out -----------------------------------------------------------


def extractive_part(segs: list[Seg], index: TranscriptIndex) -> Part:
    """Central sentences as summary and key points; every one is its own evidence."""
    central = extractive.central_segments(segs, MAX_POINTS)
    points = []
    for s in central:
        span = index.find(s.text, near=s.id)
        evidence = index.evidence(span) if span else None
        if evidence:
            points.append(Item(extractive.first_sentence(s.text), evidence))
    # The summary: the three most central sentences of all, in transcript order.
    summary = " ".join(s.text for s in extractive.central_segments(segs, 3))
    start, end = time_span(segs)
    # No title: the chapter takes the chunk's keywords (a sentence start names no topic).
    return Part(summary, points, [], "", "extractive_fallback", start, end)


def with_extractive_points(part: Part, segs: list[Seg], index: TranscriptIndex) -> Part:
    """Fill a part the model left (nearly) without grounded points with central sentences.

    A small model often answers ``key_points: []`` for a long chunk, or cites lines that
    do not back its points; a reader still needs the chunk's main points. The part's
    method says so.
    """
    if len(part.points) >= MIN_POINTS:
        return part
    extra = [p for p in extractive_part(segs, index).points if p.text]
    filled = dedup(part.points + extra)[: max(MIN_POINTS + 1, len(part.points))]
    if len(filled) > len(part.points):
        part.points = sorted(filled, key=lambda i: (i.evidence.start or 0.0, i.evidence.segments))
        part.method = EXTRACTIVE_POINTS
    return part


def summary_of(text: str, points: list[Item], actions: list[Item], method: str) -> Summary:
    """The service's :class:`Summary`: item texts, and their evidence in the same order."""
    return Summary(
        summary=text,
        key_points=[p.text for p in points],
        action_items=[a.text for a in actions],
        key_points_evidence=[p.evidence for p in points],
        action_items_evidence=[a.evidence for a in actions],
        method=method,
    )


def to_summary(part: Part) -> Summary:
    return summary_of(part.summary, part.points, part.actions, part.method)
