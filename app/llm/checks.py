"""Spot a degenerate summary before anyone reads it.

The failure modes seen from the bundled 0.5B model on real meetings: one phrase
repeated ("Meeting transcript is ..." five times), text about the transcript
instead of its content, long verbatim copies of the input, and empty or one-word
fields, and names or numbers that nobody said ("a meeting in Chicago" when nobody
mentioned Chicago). Each check returns a short problem code; an empty list means
"looks sane".
"""

from __future__ import annotations

import re
from collections import Counter

from app.llm.grounding import TranscriptIndex, normalize

REPEAT_NGRAM = 3
MAX_REPEAT_RATE = 0.25  # share of word trigrams that are repeats, across all fields
MAX_COPY_WORDS = 25  # a longer verbatim run in the summary text is copying, not summarizing
MIN_SUMMARY_WORDS = 4

# Text about the document itself rather than what was said in it.
_META = re.compile(
    r"\b(transcript|transcription|summary|summari[sz]ed?|this recording|the recording|"
    r"the audio|the text (is|was|provided|above|below))\b"
)
_META_SUBJECT = re.compile(
    r"^(the |this )?(meeting|conversation|call|discussion|recording|speaker|speakers)"
    r"( \w+)? (is|was|are|were) (straightforward|receiving|clear|short|brief|long|"
    r"about|recorded|ongoing|informal|formal|a (meeting|conversation|call))\b"
)


_WORD = re.compile(r"[\w'’-]+")
_SENTENCE_START = re.compile(r"(^|[.!?:;]\s+|\n)$")


def unsaid_names(text: str, index: TranscriptIndex) -> list[str]:
    """Capitalized words (not starting a sentence) and numbers that the transcript lacks."""
    said = index.vocabulary
    out = []
    for match in _WORD.finditer(text):
        word = match.group(0)
        at_start = _SENTENCE_START.search(text[: match.start()]) is not None
        named = (word[0].isupper() and not at_start and word.lower() != "i") or any(
            c.isdigit() for c in word
        )
        if not named:
            continue
        key = normalize(word).replace(" ", "")
        stems = {key, key.removesuffix("s"), key.removesuffix("es")}
        if key and not stems & said:
            out.append(word)
    return out


def is_title_list(text: str) -> bool:
    """A list of headings ("Meeting: Code of Ethics Reminder, European Event, ...").

    Prose capitalizes sentence starts and names; a run of Title Case headings capitalizes
    most words. Judged on texts of eight words or more.
    """
    words = [m for m in _WORD.finditer(text) if m.group(0)[0].isalpha()]
    if len(words) < 8:
        return False
    inner = [
        m.group(0)
        for m in words
        if _SENTENCE_START.search(text[: m.start()]) is None and m.group(0).lower() != "i"
    ]
    capitals = sum(w[0].isupper() for w in inner)
    return capitals > 0.5 * max(1, len(inner))


_CONNECTIVES = {"and", "of", "the", "for", "on", "in", "with", "to", "a"}


def is_heading(sentence: str) -> bool:
    """Title Case words and nothing else ("Remote Control Discussion."): a label, no claim.

    :func:`is_title_list` judges a whole text of eight words or more; this one sentence.
    """
    words = [w for w in _WORD.findall(sentence) if w[0].isalpha()]
    inner = [w for w in words if w.lower() not in _CONNECTIVES]
    return 2 <= len(words) <= 8 and all(w[0].isupper() for w in inner)


def ngram_repeat_rate(texts: list[str], n: int = REPEAT_NGRAM) -> float:
    """Share of word n-grams (within each text, over all texts) that already occurred."""
    grams: list[tuple[str, ...]] = []
    for t in texts:
        w = normalize(t).split()
        grams += [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(c - 1 for c in counts.values()) / len(grams)


def repeat_rates(summary: str, items: list[str]) -> tuple[float, float]:
    """(repetition within the summary, repetition among the items)."""
    return ngram_repeat_rate([summary]), ngram_repeat_rate(items)


def is_meta(text: str, index: TranscriptIndex | None = None) -> bool:
    """Talks about the transcript/meeting as a document (unless the speakers did too)."""
    norm = normalize(text)
    match = _META.search(norm)
    if match and not (index and index.contains(match.group(0))):
        return True
    return _META_SUBJECT.search(norm) is not None


def longest_copy(text: str, index: TranscriptIndex) -> int:
    """Length in words of the longest run of ``text`` that occurs verbatim in the transcript."""
    words = normalize(text).split()
    best = 0
    i = 0
    while i < len(words):
        # Grow a run from i while it still occurs; jump past it (runs do not nest usefully).
        j = i + best + 1
        if j > len(words):
            break
        if index.contains(" ".join(words[i:j])):
            while j < len(words) and index.contains(" ".join(words[i : j + 1])):
                j += 1
            best = j - i
        i += 1
    return best


QUOTE_RUN = 5  # this many words in a row from the transcript are a quote
MAX_QUOTED_SHARE = 0.5  # a summary with more of its words in quotes repeats the speaker


def quoted_share(text: str, index: TranscriptIndex, min_run: int = QUOTE_RUN) -> float:
    """Share of the text's words that sit in verbatim runs of ``min_run`` or more words.

    Seen from the 0.5B model on the JFK clip: "The speakers ask not what your country can
    do for you, ask what you can do for your country." 17 of its 19 words are his, in his
    person; no single long copy (:func:`longest_copy`) but a quote, not a summary.
    """
    words = normalize(text).split()
    if not words:
        return 0.0
    covered = [False] * len(words)
    for i in range(len(words) - min_run + 1):
        if index.contains(" ".join(words[i : i + min_run])):
            covered[i : i + min_run] = [True] * min_run
    return sum(covered) / len(words)


def problems(
    summary: str,
    key_points: list[str],
    action_items: list[str],
    index: TranscriptIndex,
    extractive: bool = False,
) -> list[str]:
    """Why this output must not be shown as a summary ([] if none).

    ``extractive``: the text is transcript sentences by design, so copying is expected.
    """
    found: list[str] = []
    if len(normalize(summary).split()) < MIN_SUMMARY_WORDS:
        found.append("empty_summary")
    if any(len(normalize(p).split()) < 2 for p in key_points + action_items):
        found.append("one_word_item")
    # Items may restate the summary; repetition is within the summary or among the items.
    if max(repeat_rates(summary, key_points + action_items)) > MAX_REPEAT_RATE:
        found.append("repetition")
    fields = [summary, *key_points, *action_items]
    meta = sum(is_meta(t, index) for t in fields)
    if is_meta(summary, index) or meta * 2 > len(fields):
        found.append("meta_text")
    if not extractive and longest_copy(summary, index) > MAX_COPY_WORDS:
        found.append("copied_transcript")
    if not extractive and unsaid_names(" ".join([summary, *key_points, *action_items]), index):
        found.append("unsaid_names")
    if not extractive and is_title_list(summary):
        found.append("not_prose")
    return found
