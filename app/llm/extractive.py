"""Extractive fallback: the most central sentences of the transcript, no LLM involved.

TextRank over TF-IDF cosine similarity (numpy only): sentences that share
vocabulary with many other sentences score high. Used when the LLM's output
fails the degeneracy checks twice; the result is labelled ``extractive_fallback``
so nobody mistakes it for an abstractive summary. Every picked sentence is a
transcript segment, so its evidence is exact.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from app.llm.grounding import STOPWORDS, Seg, content_words, normalize

# Fillers carry no topic; without them "yeah okay" sentences look central.
_STOP = set(
    "a an the and or but so of to in on at for with from by is are was were be been am i you "
    "he she it we they me him her us them my your our their this that these those there here "
    "do does did have has had not no yes yeah okay ok oh um uh mm hmm mhm like just really "
    "well right know think what which who how when where why if then than also very can could "
    "would will shall should may might must all any some one two its im youre thats dont".split()
)
MIN_WORDS = 5
MIN_TOPIC_WORDS = 3  # "well, there's a lot of things that we talk about" has one ("things")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _tokens(text: str) -> list[str]:
    return [w for w in normalize(text).split() if w not in _STOP and len(w) > 1]


def textrank(sentences: list[str], damping: float = 0.85, iterations: int = 50) -> np.ndarray:
    """Centrality score per sentence (PageRank on the TF-IDF cosine similarity graph)."""
    n = len(sentences)
    if n == 0:
        return np.zeros(0)
    docs = [Counter(_tokens(s)) for s in sentences]
    vocab = sorted({w for d in docs for w in d})
    if not vocab:
        return np.full(n, 1.0 / n)
    col = {w: i for i, w in enumerate(vocab)}
    df = Counter(w for d in docs for w in d)
    idf = np.array([math.log((1 + n) / (1 + df[w])) + 1.0 for w in vocab])
    tf = np.zeros((n, len(vocab)))
    for r, d in enumerate(docs):
        for w, c in d.items():
            tf[r, col[w]] = c
    vec = tf * idf
    norms = np.linalg.norm(vec, axis=1, keepdims=True)
    vec = np.divide(vec, norms, out=np.zeros_like(vec), where=norms > 0)
    sim = vec @ vec.T
    np.fill_diagonal(sim, 0.0)
    rows = sim.sum(axis=1, keepdims=True)
    # A sentence linked to nothing spreads its vote evenly (standard dangling-node rule).
    trans = np.divide(sim, rows, out=np.full_like(sim, 1.0 / n), where=rows > 0)
    score = np.full(n, 1.0 / n)
    for _ in range(iterations):
        new = (1 - damping) / n + damping * trans.T @ score
        if np.abs(new - score).sum() < 1e-9:
            score = new
            break
        score = new
    return score


def sentences(segments: list[Seg]) -> list[Seg]:
    """Split segments into sentences (Whisper segments often hold several), same ids."""
    out: list[Seg] = []
    for seg in segments:
        for sentence in _SENTENCE_END.split(seg.text.strip()):
            if sentence.strip():
                out.append(Seg(seg.id, seg.start, seg.end, sentence.strip(), seg.speaker))
    return out


def central_segments(segments: list[Seg], k: int) -> list[Seg]:
    """The ``k`` most central substantive sentences, in transcript order.

    Sentences with fewer than ``MIN_WORDS`` words ("Hello.", "Yeah.") or fewer than
    ``MIN_TOPIC_WORDS`` words that are not fillers, and repeats, are left out: they are
    not what a reader needs, however often they occur.
    """
    pool: list[Seg] = []
    seen: set[str] = set()
    for s in sentences(segments):
        key = normalize(s.text)
        topic_words = len(content_words(s.text))
        substantive = len(key.split()) >= MIN_WORDS and topic_words >= MIN_TOPIC_WORDS
        if substantive and key not in seen:
            seen.add(key)
            pool.append(s)
    if not pool:
        pool = sentences(segments)[:k]
    if not pool:
        return []
    scores = textrank([s.text for s in pool])
    top = sorted(np.argsort(-scores, kind="stable")[:k].tolist())
    return [pool[i] for i in top]


def first_sentence(text: str, max_words: int = 25) -> str:
    sentence = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0]
    words = sentence.split()
    return " ".join(words[:max_words]) + ("…" if len(words) > max_words else "")


def _topic_words(text: str) -> list[str]:
    return [w for w in _tokens(text) if len(w) > 3 and w not in STOPWORDS]


def chunk_keywords(chunks: list[list[Seg]], k: int = 3) -> list[list[str]]:
    """Each chunk's ``k`` most distinctive words (TF-IDF across the chunks), for titles.

    A word must occur at least twice in its chunk: one mention is not a topic.
    """
    counts = [Counter(w for s in chunk for w in _topic_words(s.text)) for chunk in chunks]
    df = Counter(w for c in counts for w in c)
    n = len(chunks)
    out = []
    for c in counts:
        scored = [(cnt * math.log(1 + n / df[w]), w) for w, cnt in c.items() if cnt >= 2]
        scored.sort(key=lambda x: (-x[0], x[1]))
        out.append([w for _, w in scored[:k]])
    return out
