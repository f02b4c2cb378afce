"""Topics from the transcript, titles a person would write, key points that are not copies.

Real QMSum validation meetings (AMI, human topic segmentation; bench/data/qmsum) and the
bundled model; no component of ours is mocked. The whole summarizer on a real meeting is
tests/test_tasks_api.py's 13-minute call (titles, written points, sentences); QMSum's
meetings end to end are bench/qmsum.py's.
"""

from __future__ import annotations

import pytest

from app.core.model_assets import resolve_llm_model
from app.core.settings import Settings
from app.llm.answers import (
    Item,
    Part,
    SummaryStats,
    copies_line,
    echoes_prompt,
    extractive_part,
    ground_answer,
    points_from_summary,
    says_nothing,
    supported_sentences,
)
from app.llm.chunking import chunk_segments, names_a_topic
from app.llm.engines import LlamaCppEngine
from app.llm.grounding import Seg, TranscriptIndex, number_lines, segments_from_dicts
from app.llm.summarize import TranscriptSummarizer
from app.llm.topics import segment_topics, topic_phrases
from bench import qmsum
from tests.conftest import LLM_THREADS


def _tokens(seg: Seg) -> int:
    return int(len(seg.text.split()) * 1.4) + 6


def _meetings():
    for m in qmsum.load("val"):
        segd, starts = qmsum.timed_segments(m)
        segs = segments_from_dicts(segd)
        yield m, segs, qmsum.reference_boundaries(m, starts, segd[-1]["end"])


def test_the_test_split_is_refused():
    with pytest.raises(SystemExit):
        qmsum.load("test")


def test_topic_boundaries_match_people_better_than_fixed_chunks():
    topic_f1, fixed_f1 = [], []
    for _, segs, ref in _meetings():
        topics = segment_topics(segs, 300.0, 3000, _tokens)
        assert [s for t in topics for s in t] == segs  # consecutive, nothing lost or repeated
        topic_f1.append(qmsum.boundary_f1(ref, [t[0].start for t in topics[1:]]))
        chunks = chunk_segments(segs, 3000, 300.0, lambda t: int(len(t.split()) * 1.4) + 6)
        fixed_f1.append(qmsum.boundary_f1(ref, [c[1].start for c in chunks[1:]]))
    assert len(topic_f1) == 4
    assert sum(topic_f1) / 4 >= 0.45
    assert sum(topic_f1) > sum(fixed_f1) + 0.4


def test_a_topic_that_does_not_fit_one_call_is_cut_again():
    _, segs, _ = next(_meetings())
    topics = segment_topics(segs, 3600.0, 800, _tokens)  # one topic wanted, small budget
    assert len(topics) > 2
    assert all(sum(_tokens(s) for s in t) <= 800 or len(t) == 1 for t in topics)


def test_titles_are_phrases_not_keyword_lists():
    _, segs, _ = next(_meetings())
    topics = segment_topics(segs, 300.0, 3000, _tokens)
    titles = topic_phrases(topics)
    assert len(titles) == len(topics)
    for title in titles:
        assert "," not in title and 2 <= len(title.split()) <= 6, title
        assert names_a_topic(title), title


def test_a_copied_line_behind_its_speaker_s_name_is_still_a_copy():
    """Seen on QMSum val (TS3010b): "Project Manager there's the minutes from the first
    meeting." for the Project Manager's line "There's the minutes from the first meeting."
    """
    line = "There's the minutes from the first meeting."
    names = TranscriptIndex([Seg(0, 0.0, 3.0, line, speaker="Project Manager")]).speaker_words
    assert names == {"project", "manager"}
    assert not copies_line("Project Manager there's the minutes from the first meeting.", line)
    assert copies_line("Project Manager there's the minutes from the first meeting.", line, names)
    assert copies_line("Project Manager's: the minutes from the first meeting.", line, names)
    assert not copies_line("The project manager shared last meeting's minutes.", line, names)
    assert qmsum.is_verbatim(
        "Project Manager there's the minutes from the first meeting.",
        [qmsum._words(line)],
        {"project", "manager"},
    )


def test_a_key_point_that_repeats_its_line_is_dropped():
    line = "I'm not 100% sure, but I'm not having crashes at the moment."
    assert copies_line(line, line.lower())
    assert copies_line("not having crashes at the moment", line)
    assert not copies_line("The app no longer crashes for him, he thinks.", line)
    segs = [Seg(0, 0.0, 4.0, line), Seg(1, 4.0, 8.0, "Let's ship the build on Friday.")]
    index = TranscriptIndex(segs)
    answer = {
        "summary": "He reports no crashes.",
        "key_points": [
            {"line": 1, "point": "I'm not 100% sure, but I'm not having crashes at the moment."},
            {
                "line": 1,
                "point": "He is not having crashes at the moment, though he is not 100% sure.",
            },
        ],
        "action_items": [],
    }
    part = ground_answer(answer, index, SummaryStats(), number_lines(segs))
    assert [p.text for p in part.points] == [
        "He is not having crashes at the moment, though he is not 100% sure."
    ]
    assert part.copied == 1


@pytest.fixture(scope="module")
def engine():
    settings = Settings()
    model = resolve_llm_model("llama_cpp", settings.llm_model, settings.cache_dir)
    return LlamaCppEngine(model, context_tokens=4096, threads=LLM_THREADS)


def test_a_topic_the_model_failed_on_gives_no_copied_lines_as_key_points(engine):
    """Seen on QMSum val: one failed topic's central lines (verbatim, "I've got no idea
    how to draw a cow.") became key points next to the written ones."""
    segs = [
        Seg(0, 0.0, 5.0, "The remote should have a big round body that fits the hand."),
        Seg(1, 5.0, 10.0, "A round body would also make the remote easy to find."),
        Seg(2, 10.0, 15.0, "I've got no idea how to draw a cow on the whiteboard."),
        Seg(3, 15.0, 20.0, "The whiteboard drawing of the animal took a long time."),
    ]
    index = TranscriptIndex(segs)
    written = Part(
        "The team wants a round remote body that is easy to find.",
        [
            Item(
                "The team wants a big round remote body.",
                index.evidence(index.find(segs[0].text, near=0)),
            )
        ],
        [],
        "Round remote body",
        "llm",
        0.0,
        10.0,
    )
    failed = extractive_part(segs[2:], index)
    assert failed.points and all(copies_line(p.text, p.evidence.quote) for p in failed.points)
    summarizer = TranscriptSummarizer(engine, max_output_tokens=256, temperature=0.0)
    out = summarizer._merge([written, failed], segs, index, None, SummaryStats())
    lines = [qmsum._words(s.text) for s in segs]
    assert "The team wants a big round remote body." in out.key_points
    assert not any(qmsum.is_verbatim(p, lines) for p in out.key_points), out.key_points
    assert out.method != "llm_extractive_points"


def test_a_topic_without_points_gets_its_summary_sentences_as_cited_points():
    segs = [
        Seg(0, 0.0, 5.0, "So the remote should have a big round body, easy to hold."),
        Seg(1, 5.0, 9.0, "And the buttons, we keep them few, maybe five buttons in total."),
    ]
    lines = number_lines(segs)
    part = Part(
        "The team wants a round remote body that is easy to hold. They keep five buttons. "
        "It was sunny."
    )
    part = points_from_summary(part, lines, TranscriptIndex(segs))
    assert [p.text for p in part.points] == [
        "The team wants a round remote body that is easy to hold.",
        "They keep five buttons.",
    ]  # nothing backs "It was sunny."
    assert [p.evidence.segments for p in part.points] == [[0], [1]]


def test_an_item_that_echoes_the_prompt_is_dropped():
    """Seen on AMI (TS3010b): "I'll need to ask someone to do, naming the person when one
    was named." as an action item."""
    assert echoes_prompt("I'll need to ask someone to do, naming the person when one was named.")
    assert not echoes_prompt("Ask the design team about the display by Friday.")


def test_summary_sentences_that_say_nothing_or_echo_the_prompt_are_dropped():
    """Seen in ES2006a's summary (QMSum val): "Project Manager's Meeting: Okay." and
    "Project Manager: I'll need to ask someone to do, naming the person when one was
    named." between real sentences."""
    segs = [
        Seg(0, 0.0, 4.0, "Okay. I'm the project manager and this is our first meeting."),
        Seg(1, 4.0, 9.0, "I'll need to ask someone to draw the remote control design."),
        Seg(2, 9.0, 14.0, "The industrial designer wants a big round body for the remote."),
    ]
    summary = (
        "Project Manager's Meeting: Okay. "
        "Project Manager: I'll need to ask someone to do, naming the person when one was "
        "named. The industrial designer wants a round body for the remote control."
    )
    kept, dropped = supported_sentences(summary, TranscriptIndex(segs))
    assert kept == "The industrial designer wants a round body for the remote control."
    assert dropped == 2
    assert says_nothing("Project Manager's Meeting: Okay.")
    assert not says_nothing("Industrial Designer: the body should be round and yellow.")
    assert not says_nothing("Okay.")  # no label: left to the other checks


def test_the_boundary_bench_reads_all_twenty_validation_meetings_and_never_test():
    from bench import qmsum_topics

    folders = [qmsum.DATA, qmsum_topics.MORE_VAL]
    val = qmsum_topics.meetings("val", folders)
    assert len(val) == 20 and len({m["id"] for m in val}) == 20
    assert all(m["topics"] and m["turns"] for m in val)
    with pytest.raises(SystemExit):
        qmsum_topics.meetings("test", folders)


def test_a_change_in_who_talks_marks_a_boundary_the_words_do_not():
    """Same words throughout: only the speakers say where the second item starts."""
    from app.llm.topics import boundary_scores, gap_depths, speaker_shifts

    line = "we looked at the remote control design and the buttons again today"
    segs = [
        Seg(i, 10.0 * i, 10.0 * i + 9.0, line, speaker="Project Manager" if i < 30 else "Designer")
        for i in range(60)
    ]
    assert max(gap_depths(segs)) < 1e-9  # nothing for lexical cohesion to find
    shifts = speaker_shifts(segs)
    assert max(range(len(segs)), key=lambda i: shifts[i]) == 30
    topics = segment_topics(segs, 300.0, 10_000, _tokens)
    assert [t[0].id for t in topics] == [0, 30]
    # Without speaker names the scores are the lexical dips alone.
    anonymous = [Seg(s.id, s.start, s.end, s.text) for s in segs]
    assert speaker_shifts(anonymous) == [0.0] * 60
    assert boundary_scores(anonymous) == [0.0] * 60
