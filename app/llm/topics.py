"""Topic segmentation by lexical cohesion (TextTiling), and chapter titles from phrases.

Fixed five-minute chunks cut topics in half and matched QMSum's human topic boundaries
with F1 about 0.35. Speakers who change topic change vocabulary: the content words
before a gap and after it overlap less at a topic shift. The gaps between segments with
the deepest dips in that overlap become the boundaries, as many as the meeting's length
asks for, never closer than a minimum topic length, and every topic fits one model call.
Pure Python: an embedding model would add a dependency that has not yet earned its place
(``docs/summaries.md``).

When the transcript names its speakers, a change in *who* talks is a second cue: a new
agenda item is often someone else's presentation. The shift in the speakers' share of
the words over two minutes each side is added to the lexical dip (QMSum AMI train, 95
meetings: boundary F1 0.44 -> 0.48; the 19 validation meetings 0.40 -> 0.43).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

from app.llm.extractive import STOPWORDS, _tokens
from app.llm.grounding import Seg, stem

BLOCK_WORDS = 120  # content words each side of a gap (about 1.5-2 minutes of speech)
MIN_TOPIC_FRACTION = 0.45  # no topic shorter than this share of the target length
WORDS_PER_S = 2.5  # when segments carry no times
SPEAKER_WINDOW_S = 120.0  # who talks in the two minutes before a gap against after it
SPEAKER_WEIGHT = 1.0  # its weight against the lexical dip (both scaled to a peak of 1)


def _content(text: str) -> list[str]:
    return [stem(w) for w in _tokens(text) if len(w) > 2 and w not in STOPWORDS]


def _cosine(a: Counter, b: Counter) -> float:
    dot = sum(v * b.get(k, 0) for k, v in a.items())
    na = math.sqrt(sum(v * v for v in a.values()))
    nb = math.sqrt(sum(v * v for v in b.values()))
    return dot / (na * nb) if na and nb else 0.0


def gap_depths(segs: list[Seg], block: int | None = None) -> list[float]:
    """Depth of the cohesion dip at each gap before segment i (index 0 unused: 0.0)."""
    block = block or BLOCK_WORDS
    words = [_content(s.text) for s in segs]
    flat: list[str] = [w for ws in words for w in ws]
    starts, pos = [], 0
    for ws in words:
        starts.append(pos)
        pos += len(ws)
    sims = [1.0] * len(segs)
    for i in range(1, len(segs)):
        p = starts[i]
        sims[i] = _cosine(Counter(flat[max(0, p - block) : p]), Counter(flat[p : p + block]))
    smooth = [
        sum(sims[j] for j in range(max(1, i - 1), min(len(segs), i + 2)))
        / len(range(max(1, i - 1), min(len(segs), i + 2)))
        for i in range(len(segs))
    ]
    depths = [0.0] * len(segs)
    for i in range(1, len(segs)):
        # the nearest peaks, not the global ones: climb while the similarity rises
        j = i
        while j > 1 and smooth[j - 1] >= smooth[j]:
            j -= 1
        k = i
        while k < len(segs) - 1 and smooth[k + 1] >= smooth[k]:
            k += 1
        left, right = smooth[j], smooth[k]
        depths[i] = (left - smooth[i]) + (right - smooth[i])
    return depths


def _clock(segs: list[Seg]) -> list[float]:
    """Each segment's start in seconds: its timestamp, else its word offset at 150 wpm."""
    out, words = [], 0
    for s in segs:
        out.append(s.start if s.start is not None else words / WORDS_PER_S)
        words += len(s.text.split())
    return out


def speaker_shifts(segs: list[Seg], window_s: float = SPEAKER_WINDOW_S) -> list[float]:
    """At each gap, 1 - cosine between the speakers' words in the ``window_s`` before and
    after it; all 0 when the segments name fewer than two speakers."""
    names = sorted({s.speaker for s in segs if s.speaker})
    if len(names) < 2:
        return [0.0] * len(segs)
    column = {name: k for k, name in enumerate(names)}
    clock = _clock(segs)
    words = [[0] * len(names)]  # cumulative words per speaker before segment i
    for s in segs:
        row = list(words[-1])
        if s.speaker:
            row[column[s.speaker]] += len(s.text.split())
        words.append(row)

    def share(a: int, b: int) -> list[int]:
        return [y - x for x, y in zip(words[a], words[b], strict=True)]

    out = [0.0] * len(segs)
    lo = hi = 0
    for i in range(1, len(segs)):
        while clock[lo] < clock[i] - window_s:
            lo += 1
        hi = max(hi, i)
        while hi < len(segs) and clock[hi] < clock[i] + window_s:
            hi += 1
        before, after = share(lo, i), share(i, hi)
        nb, na = math.hypot(*before), math.hypot(*after)
        if nb and na:
            out[i] = 1.0 - sum(x * y for x, y in zip(before, after, strict=True)) / (nb * na)
    return out


def boundary_scores(segs: list[Seg]) -> list[float]:
    """Lexical dip plus (when speakers are named) the shift in who talks, each scaled
    so its deepest gap is 1."""
    depths = gap_depths(segs, BLOCK_WORDS)
    shifts = speaker_shifts(segs)
    top_d, top_s = max(depths, default=0.0), max(shifts, default=0.0)
    eps = 1e-9  # rounding, not a dip: scaling it to 1 would invent boundaries
    return [
        (d / top_d if top_d > eps else 0.0) + (SPEAKER_WEIGHT * s / top_s if top_s > eps else 0.0)
        for d, s in zip(depths, shifts, strict=True)
    ]


def segment_topics(
    segs: list[Seg],
    target_s: float,
    budget: int,
    count_tokens: Callable[[Seg], int],
) -> list[list[Seg]]:
    """Consecutive topics: one per ``target_s`` of meeting, cut at the deepest cohesion dips.

    A topic over ``budget`` tokens is cut again at its own deepest dip, so each topic is
    one model call.
    """
    if not segs:
        return []
    clock = _clock(segs)
    duration = max(clock[-1] - clock[0], 1.0)
    depths = boundary_scores(segs)
    want = max(1, round(duration / target_s))
    min_gap = MIN_TOPIC_FRACTION * target_s
    chosen: list[int] = []
    for i in sorted(range(1, len(segs)), key=lambda i: -depths[i]):
        if len(chosen) >= want - 1:
            break
        far = all(abs(clock[i] - clock[c]) >= min_gap for c in chosen)
        inside = clock[i] - clock[0] >= min_gap and clock[-1] - clock[i] >= min_gap
        if far and inside and depths[i] > 0:
            chosen.append(i)
    cuts = [0, *sorted(chosen), len(segs)]
    topics = [segs[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
    return [piece for t in topics for piece in _fit(t, depths, segs, budget, count_tokens)]


def _fit(topic, depths, segs, budget, count_tokens) -> list[list[Seg]]:
    """Cut a topic that does not fit one call at its deepest inner dip (near the middle)."""
    if len(topic) < 2 or sum(count_tokens(s) for s in topic) <= budget:
        return [topic]
    first = segs.index(topic[0])
    n = len(topic)
    lo, hi = max(1, n // 4), max(2, 3 * n // 4)
    cut = max(range(lo, hi), key=lambda k: depths[first + k]) if hi > lo else n // 2
    return _fit(topic[:cut], depths, segs, budget, count_tokens) + _fit(
        topic[cut:], depths, segs, budget, count_tokens
    )


# Numbers said in a row ("four five six", "zero nine") are not a topic.
NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety hundred thousand million billion percent".split()
)
# Words of talk, not of a topic: "little bit", "quite boring", "important aspect".
VAGUE_WORDS = frozenset(
    "little bit bits quite important aspect aspects another each both other others lot lots "
    "sort kind thing things stuff way ways really actually basically probably maybe pretty "
    "good nice great okay right sure fine able tell said say says saying minute minutes "
    "second seconds time times moment idea ideas point points question questions "
    "whats thats theres lets dont doesnt gonna wanna yeah".split()
)
NOT_TOPICS = STOPWORDS | VAGUE_WORDS


def topic_phrases(chunks: list[list[Seg]]) -> list[str]:
    """Each chunk's most distinctive phrase as a title ("Remote control buttons")."""
    return [(ranked or [""])[0] for ranked in topic_phrase_candidates(chunks)]


def topic_phrase_candidates(chunks: list[list[Seg]], keep: int = 5) -> list[list[str]]:
    """Each chunk's most distinctive phrases, best first, as titles.

    Phrases are runs of two or three content words said together at least twice, neither
    numbers alone nor with a word of talk ("little bit"); TF-IDF across chunks ranks the
    ones that tell this chunk from the others. With none, the two most distinctive words
    joined by "and" ("Roadmap and website"): a name, not a list.
    """

    def runs(text: str) -> list[tuple[str, ...]]:
        out, run = [], []
        for w in [*_tokens(text), "."]:
            if len(w) > 2 and w not in STOPWORDS and w.isalpha():
                run.append(w)
                continue
            for n in (2, 3):
                out += [tuple(run[i : i + n]) for i in range(len(run) - n + 1)]
            run = []
        return [p for p in out if not set(p) <= NUMBER_WORDS and not set(p) & VAGUE_WORDS]

    phrase_counts = [Counter(p for s in c for p in runs(s.text)) for c in chunks]
    word_counts = [
        Counter(w for s in c for w in _tokens(s.text) if len(w) > 3 and w not in NOT_TOPICS)
        for c in chunks
    ]
    n = len(chunks)
    pdf = Counter(p for c in phrase_counts for p in c)
    wdf = Counter(w for c in word_counts for w in c)
    ranked_titles = []
    for pc, wc in zip(phrase_counts, word_counts, strict=True):
        scored = sorted(
            (
                (cnt * len(p) * math.log(1 + n / pdf[p]), p)
                for p, cnt in pc.items()
                if cnt >= 2 and len(set(p)) == len(p)
            ),
            key=lambda x: (-x[0], x[1]),
        )
        ranked = [" ".join(p).capitalize() for _, p in scored[:keep]]
        words = sorted(
            ((cnt * math.log(1 + n / wdf[w]), w) for w, cnt in wc.items() if cnt >= 2),
            key=lambda x: (-x[0], x[1]),
        )
        top = [w for _, w in words[:2]]
        if len(top) == 1:
            top = ["the " + top[0]]  # "The roadmap": two words, still a name
        if top and not ranked:
            ranked.append(" and ".join(top).capitalize())
        ranked_titles.append(ranked)
    return ranked_titles
