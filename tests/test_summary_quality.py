"""Summaries a person can trust: evidence, no invented actions, no garbage, chapters.

Real models on real audio: tiny.en transcribes the two-person phone call and the AMI
meeting excerpt (tests/data/SOURCES.md, bench/data/SOURCES.md), and the bundled 0.5B LLM
summarizes them. Longer meetings: a 13-minute W3C call goes through the service
(tests/test_tasks_api.py), a 12-minute QMSum meeting through the topic summarizer
(tests/test_topics.py). The 43 minutes of W3C calls are checked by
``bench/long_meeting.py``, which a CI run on a 2-core Zen 1 could not also afford
(docs/benchmarks.md, "The suite on a Zen 1").
The checks themselves (grounding, degeneracy, TextRank) are also tested on their own,
on the failure cases seen in issue 11.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.model_assets import resolve_llm_model, resolve_stt_model
from app.core.schemas import Evidence
from app.core.settings import Settings
from app.llm import checks, extractive
from app.llm.answers import (
    Item,
    echoes_prompt,
    parse_json,
    supported_sentences,
    without_heading_label,
)
from app.llm.engines import LlamaCppEngine
from app.llm.grounding import (
    Seg,
    TranscriptIndex,
    has_commitment,
    number_lines,
    segments_from_dicts,
)
from app.llm.prompts import RESTATE_EXAMPLE, grounded_schema
from app.llm.summarize import (
    Part,
    SummaryStats,
    TranscriptSummarizer,
    chapters_for,
    ground_answer,
    points_beyond,
    trim_summary,
)
from app.llm.voice import reported, speaks_as_a_speaker
from app.speech.stt import SpeechToText
from tests.conftest import LLM_THREADS, assert_reported_jfk

REPO = Path(__file__).resolve().parent.parent
PHONE_CALL = REPO / "tests" / "data" / "phone_call.flac"
AMI_MIX = REPO / "bench" / "data" / "ami_remote" / "mixture.flac"

MEETING = [
    Seg(0, 0.0, 4.0, "Okay, so the remote control needs a simple menu on an LCD display."),
    Seg(1, 4.0, 8.0, "People find too many buttons complicated, like on old mobile phones."),
    Seg(2, 8.0, 12.0, "I'll ask the design team what they think about the display by Friday."),
    Seg(3, 12.0, 16.0, "Yeah, and symbols that you don't understand are a problem too."),
]


# -- the checks on their own ----------------------------------------------------------


def test_quotes_must_occur_in_the_transcript():
    index = TranscriptIndex(MEETING)
    evidence, repaired = index.ground("needs a simple MENU, on an lcd display", near=0)
    assert evidence is not None and not repaired
    assert evidence.segments == [0] and evidence.start == 0.0 and evidence.end == 4.0
    assert index.ground("Schedule a meeting with Diane and Sheila in Chicago")[0] is None
    # A quote that drifts at the end is trimmed to the part that does occur.
    trimmed, repaired = index.ground("too many buttons complicated for the elderly users")
    assert repaired and trimmed.quote == "too many buttons complicated"


def test_ungrounded_items_and_actions_without_a_commitment_are_dropped():
    answer = {
        "summary": "The team wants a remote with a menu on a small display.",
        "key_points": [
            {"segment": 0, "quote": "a simple menu on an LCD display", "point": "Simple LCD menu"},
            {"segment": 1, "quote": "the meeting was held in Chicago", "point": "In Chicago"},
        ],
        "action_items": [
            {"segment": 2, "quote": "I'll ask the design team", "task": "Ask design team"},
            {"segment": 3, "quote": "symbols that you don't understand", "task": "Take notes"},
            {"segment": 0, "quote": "Schedule a meeting", "task": "Schedule a meeting"},
        ],
    }
    stats = SummaryStats()
    part = ground_answer(answer, TranscriptIndex(MEETING), stats)
    assert [p.text for p in part.points] == ["Simple LCD menu"]
    assert [a.text for a in part.actions] == ["Ask design team"]
    assert part.actions[0].evidence.segments == [2]
    assert stats.dropped == 3


def test_items_cite_lines_that_must_back_them():
    """The model cites numbered lines; the line must share the item's content words."""
    lines = number_lines(MEETING)
    assert [x.n for x in lines] == [1, 2, 3, 4] and lines[2].seg.id == 2
    answer = {
        "summary": "The team wants a remote with a menu on a small display.",
        "key_points": [
            {"line": 1, "point": "The remote control needs a simple menu on an LCD display."},
            {"line": 1, "point": "The remote should offer a simple LCD menu."},
            {"line": 1, "point": "Too many buttons are complicated, as on old mobile phones."},
            {"line": 4, "point": "The meeting was held in Chicago."},
            {"line": 2, "point": "It is what it is."},
        ],
        "action_items": [
            {"line": 3, "task": "Ask the design team about the display by Friday."},
            {"line": 4, "task": "Symbols people don't understand are a problem."},
            {"line": 3, "task": "The main points"},
        ],
    }
    stats = SummaryStats()
    part = ground_answer(answer, TranscriptIndex(MEETING), stats, lines)
    assert [p.text for p in part.points] == [
        "The remote should offer a simple LCD menu.",  # not the line copied (issue 22)
        "Too many buttons are complicated, as on old mobile phones.",  # line 2, not 1
    ]
    assert part.copied == 1
    assert part.points[1].evidence.segments == [1]
    assert part.points[1].evidence.quote.startswith("people find too many buttons")
    assert [a.text for a in part.actions] == ["Ask the design team about the display by Friday."]
    assert part.actions[0].evidence.segments == [2]
    assert stats.repaired == 1  # the miscounted citation
    # A copy of its line, Chicago, a point with no content, no commitment, no support.
    assert stats.dropped == 5


def test_a_chapter_title_names_a_topic_not_the_meeting():
    chunks = [
        [Seg(0, 0.0, 5.0, "The roadmap is old. We should update the roadmap and the website.")],
        [Seg(1, 5.0, 9.0, "The test suite fails. Who runs the test suite for the vendors?")],
    ]
    parts = [
        Part("They discuss the roadmap.", title="Meeting Summary", start=0.0, end=5.0),
        Part("They discuss the test suite.", title="Vendor test suite", start=5.0, end=9.0),
    ]
    chapters = chapters_for(parts, chunks)
    assert chapters[0].title == "The roadmap"  # the part's words: a name, not a list
    assert chapters[1].title == "Vendor test suite"
    # Seen on the 43 minutes of calls: the prompt echoed back, a one-word title.
    parts[1].title = "2 to 6 words naming the topic the"
    assert chapters_for(parts, chunks)[1].title == "Test suite"  # the phrase said twice
    parts[1].title = "Thanks"
    assert chapters_for(parts, chunks)[1].title == "Test suite"
    # Seen on AMI: "Yellow, fashion, control". A comma-joined list is never a title.
    parts[1].title = "Suite, vendors, test"
    assert chapters_for(parts, chunks)[1].title == "Test suite"
    # Seen on QMSum val (ES2009b): a speaker's label and a fragment.
    parts[1].title = "Project Manager: How We Can Use"
    assert chapters_for(parts, chunks)[1].title == "Test suite"
    # Seen on QMSum val: a title that names who talked before what about.
    said = "The test suite fails. Who runs the test suite for the vendors?"
    chunks[1] = [Seg(1, 5.0, 9.0, said, "Project Manager")]
    parts[1].title = "Project Manager's talk on vendor tests"
    assert chapters_for(parts, chunks)[1].title == "Vendor tests"
    parts[1].title = "Project Manager's Presentation"  # nothing left: the part's phrase
    assert chapters_for(parts, chunks)[1].title == "Test suite"
    assert [c.gist for c in chapters] == [
        "They discuss the roadmap.",
        "They discuss the test suite.",
    ]


def test_a_chapter_title_is_neither_the_meetings_subject_nor_said_twice():
    """Seen on QMSum: "Remote control" titled chapters in three of four validation
    meetings (twice in one as "Remote control"/"Remote controls"), "Double curved" two
    chapters of one train meeting, and "Zero nine" or "Four five six" a chapter."""
    said = [
        "The remote control needs rubber push buttons. Rubber push buttons feel soft. "
        "Our remote control code is zero nine, zero nine.",
        "The remote control battery is solar. A solar battery lasts. Solar battery it is.",
        "The remote control case is double curved. Double curved cases cost more. "
        "Double curved, and a little bit yellow, a little bit.",
        "Again the remote control case: double curved, double curved, but the plastic "
        "cover too. The plastic cover is cheap.",
    ]
    chunks = [[Seg(i, 60.0 * i, 60.0 * i + 50, text)] for i, text in enumerate(said)]
    titles = ["Remote control", "Solar battery", "Double curved", "Double curved"]
    parts = [
        Part(f"They discuss part {i}.", title=t, start=60.0 * i, end=60.0 * i + 50)
        for i, t in enumerate(titles)
    ]
    got = [c.title for c in chapters_for(parts, chunks)]
    assert got[0] == "Rubber push buttons", got  # the subject of every chapter: the phrase
    assert got[1] == "Solar battery"  # the model's own title names the topic: kept
    assert got[2] == "Double curved"
    assert got[3] == "Plastic cover", got  # said already: the part's next phrase
    assert not any(set(t.lower().split()) <= {"zero", "nine"} for t in got)
    assert not any("little bit" in t.lower() for t in got)


def test_commitment_cues():
    assert has_commitment("I'll ask the design team by Friday")
    assert has_commitment("can you send me the slides")
    assert has_commitment("let's move the review to Tuesday")
    assert not has_commitment("I live in New Jersey but I'm originally from Chicago")
    # Seen as action items on QMSum val: what the product must be, nobody's task.
    assert not has_commitment("It also needs to have the company colours included in it.")
    assert not has_commitment("And it has to have the slogan, we put fashion in electronics.")
    assert not has_commitment("It's going to be a bit more expensive.")
    assert has_commitment("We need to include the company colours, it has to have the slogan.")
    assert has_commitment("Then it has to go, so John has to send the colours.")


def test_the_degenerate_output_from_issue_11_is_caught():
    index = TranscriptIndex(MEETING)
    bad = checks.problems(
        "Meeting transcript summary - Meeting transcript is receiving - "
        "Meeting transcript is straightforward - Meeting transcript is receiving - "
        "Meeting transcript is straightforward",
        ["Meeting transcript is receiving", "Meeting transcript is straightforward"],
        ["Take notes today"],
        index,
    )
    assert "meta_text" in bad and "repetition" in bad
    assert checks.problems("Ok", [], [], index) == ["empty_summary"]
    copied = " ".join(s.text for s in MEETING)
    assert "copied_transcript" in checks.problems(copied, [], [], index)
    good = "The team wants a simple menu on a small display and will ask the designers."
    assert checks.problems(good, ["A simple menu on an LCD"], [], index) == []


def test_names_and_numbers_nobody_said_are_caught():
    call = TranscriptIndex(
        [Seg(0, 0.0, 5.0, "Hi, I'm Diane from New Jersey. Sheila's in Texas since 1999.")]
    )
    said = "Diane lives in New Jersey and Sheila has been in Texas since 1999."
    assert checks.unsaid_names(said, call) == []
    assert checks.problems(said, [], [], call) == []
    invented = "Diane and Sheila plan a meeting in Chicago for 2024."
    assert checks.unsaid_names(invented, call) == ["Chicago", "2024"]
    assert "unsaid_names" in checks.problems(invented, [], [], call)


def test_a_list_of_headings_is_not_a_summary():
    """Seen on the 13-minute call: the merge step answered with headings, not prose."""
    headings = (
        "Meeting: Code of Ethics Reminder, Ethics Reminder, European Event, Digital Identity "
        "Conference Europe, April 18 to 19, Registration Open Soon, Any Other Announcements?"
    )
    assert checks.is_title_list(headings)
    assert not checks.is_title_list(
        "Diane lives in New Jersey and Sheila in Texas; both grew up in Chicago, Illinois."
    )


def test_textrank_prefers_the_central_sentence():
    sentences = [
        "The remote needs a menu on the display.",
        "The display shows the menu of the remote.",
        "A menu on the remote display helps users.",
        "Lunch was good.",
    ]
    scores = extractive.textrank(sentences)
    assert scores.argmin() == 3 and abs(scores.sum() - 1.0) < 1e-6


def test_a_looping_summary_is_cut_at_the_loop():
    looping = (
        "Diane lives in New Jersey and Sheila in Texas. Both grew up in Chicago. "
        "Diane lives in New Jersey and Sheila in Texas. Both grew up in Chicago. Diane lives"
    )
    assert trim_summary(looping) == (
        "Diane lives in New Jersey and Sheila in Texas. Both grew up in Chicago."
    )


JFK_LINE = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)


def test_a_summary_sentence_about_things_nobody_said_is_dropped():
    """Seen from the 0.5B model on the JFK clip: a right sentence, then an invented one."""
    segs = segments_from_dicts([{"id": 0, "start": 0.0, "end": 11.0, "text": JFK_LINE}])
    stats = SummaryStats()
    data = {
        "key_points": [],
        "action_items": [],
        "summary": "He asks Americans what they can do for their country. "
        "This is a common topic in discussions about global issues.",
    }
    part = ground_answer(data, TranscriptIndex(segs), stats, number_lines(segs))
    assert part.summary == "He asks Americans what they can do for their country."
    assert stats.dropped == 1


def test_a_summary_in_the_speakers_own_words_is_a_quote():
    """Seen from the 0.5B model on the JFK clip: his line, in his person, as the summary."""
    index = TranscriptIndex(segments_from_dicts([{"id": 0, "text": JFK_LINE}]))
    quoted = (
        "The speakers ask not what your country can do for you, "
        "ask what you can do for your country."
    )
    restated = (
        "The speaker encourages the fellow Americans to ask what they can do for their "
        "country rather than what the country can do for them."
    )
    assert checks.quoted_share(quoted, index) > checks.MAX_QUOTED_SHARE
    assert checks.quoted_share(restated, index) <= checks.MAX_QUOTED_SHARE
    # The worked example's answer given back (seen on a long QMSum topic) is never kept.
    assert echoes_prompt(RESTATE_EXAMPLE[1]) and not echoes_prompt(restated)
    said = "The team gives a lot. The listeners think about what they give the team."
    team = TranscriptIndex(segments_from_dicts([{"id": 0, "text": said}]))
    assert supported_sentences(RESTATE_EXAMPLE[1], team)[0] == ""


def test_headings_and_labelled_quotes_leave_a_meeting_summary():
    """Seen in the 0.5B model's topic summaries of AMI meetings (QMSum train)."""
    said = [
        "Just put it on the deskt desktop.",
        "So we need to decide exactly what we're going to do with the remote.",
        "A squarey box with a rubber button is boring.",
    ]
    index = TranscriptIndex(segments_from_dicts([{"id": i, "text": t} for i, t in enumerate(said)]))
    glued = (
        "Project Manager and User Interface Summary The speakers discuss a squarey box "
        "with a rubber button. Remote Control Discussion. Marketing and Marketing "
        "discussed a rubber button."
    )
    assert supported_sentences(glued, index)[0] == (
        "The speakers discuss a squarey box with a rubber button. "
        "Marketing discussed a rubber button."
    )
    sentences = [
        "Marketing: Just put it on the deskt desktop.",
        "The Project Manager asks the designer to decide exactly what we're going to do "
        "with the remote.",
    ]
    own = "The speakers discuss a squarey box with a rubber button."
    assert TranscriptSummarizer._own_words([*sentences, own], index) == [sentences[1], own]
    # One sentence would be left: the summary keeps the quote rather than say one phrase.
    assert TranscriptSummarizer._own_words(sentences, index) == sentences


def test_items_and_summaries_report_rather_than_speak_as_the_speakers():
    """Seen in the 0.5B model's answers on AMI meetings (QMSum train and validation)."""
    said = [
        ("Project Manager", "So, this is our first meeting of this design project."),
        (
            "Project Manager",
            "I'll take notes during this meeting so uh that you can uh look at my uh folder.",
        ),
        ("Marketing", "We need to go with plastic, it's quite quite cheap."),
    ]
    segments = [{"id": i, "text": t, "speaker": who} for i, (who, t) in enumerate(said)]
    index = TranscriptIndex(segments_from_dicts(segments))
    lines = number_lines(index.segments)
    data = {
        "summary": "We will go with plastic. The speakers discuss plastic.",
        "key_points": [],
        "action_items": [{"task": said[1][1], "line": 2}],
    }
    part = ground_answer(data, index, SummaryStats(), lines)
    # The owner is the one who said "I'll"; the fillers go; the evidence stays verbatim.
    assert [a.text for a in part.actions] == [
        "Project Manager will take notes during this meeting."
    ]
    assert "uh folder" in part.actions[0].evidence.quote
    # An "I" the model wrote as itself names nobody: no owner is made up for it, and an
    # item nobody owns that speaks as "I" is not an item.
    data["action_items"] = [{"task": "I'll ask the Project Manager to take notes.", "line": 2}]
    written = ground_answer(data, index, SummaryStats(), lines)
    assert written.actions == []
    assert part.summary == "The group will go with plastic. The speakers discuss plastic."
    sentences = [
        said[0][1],
        "The speakers discuss plastic.",
        "I'll ask the user to confirm the plastic.",
        "The group needs to finish up.",
    ]
    assert TranscriptSummarizer._own_words(sentences, index) == [sentences[1], sentences[3]]
    assert TranscriptSummarizer._own_words(sentences[:2], index) == sentences[:2]
    # The JFK clip, 0.5B model: a word said again in the plural is said once.
    assert reported("The speakers are asking American Americans to ask.") == (
        "The speakers are asking Americans to ask."
    )
    # The model's own label in front names the owner; a line with no rewrite keeps it.
    assert reported("Project Manager: I will take notes.") == "Project Manager will take notes."
    assert reported("Marketing: So each of you will show us.") == (
        "Marketing: So each of you will show us."
    )
    # Said of its speaker, the speaker's "myself" and "my" are theirs; the group's "we're"
    # is then "they're" (QMSum val, ES2006a: "Project Manager will introduce myself …").
    assert reported("Project Manager: I will introduce myself and use the tools we're using.") == (
        "Project Manager will introduce themselves and use the tools they're using."
    )
    assert reported('Marketing: I\'ll send my notes, "my plan" as said.') == (
        'Marketing will send their notes, "my plan" as said.'
    )


def test_a_report_does_not_run_on_into_a_speakers_line():
    """Seen in the 0.5B model's topic summaries of AMI meetings (QMSum validation)."""
    # A sentence that runs on into the speaker's words speaks as the speaker.
    for spoken in (
        "Project Manager proposed a smaller eraser, the user interface suggested dogs but I "
        "like dogs.",
        "The designers discuss remote controls for let's make that go away.",
        "The other things I found are a complicated remote control sorry.",
        "The project manager asks the user to draw your favourite animal.",
    ):
        assert speaks_as_a_speaker(spoken), spoken
    for report in (
        "The US market is large.",
        'Marketing said "I like it" about the yellow case.',
        "The group chose plastic.",
    ):
        assert not speaks_as_a_speaker(report), report
    # The speakers' "we" in a report is "they"; next to an "I" it stays the speaker's.
    assert reported("The Project Manager asks what we're going to do with our remote.") == (
        "The Project Manager asks what they're going to do with their remote."
    )
    assert reported("I think we should go.") == "I think we should go."
    # A word broken off and said again whole is said once; short words of their own stay.
    assert reported("The group wants mo modern plastics on the deskt desktop.") == (
        "The group wants modern plastics on the desktop."
    )
    assert reported("Marketing said they were in into the idea.") == (
        "Marketing said they were in into the idea."
    )
    said = [
        ("Project Manager", "I'll uh take notes, and I proposed a smaller eraser for us."),
        ("Marketing", "We need to go with plastic, it's quite cheap."),
        ("Project Manager", "I'll call the designer about the prices tomorrow."),
    ]
    segments = [{"id": i, "text": t, "speaker": who} for i, (who, t) in enumerate(said)]
    index = TranscriptIndex(segments_from_dicts(segments))
    stats = SummaryStats()
    data = {
        "summary": "The group talks about plastic.",
        "key_points": [
            {"point": "I proposed that I make the eraser smaller.", "line": 1},
            {"point": "Marketing wants plastic because it is cheap.", "line": 2},
        ],
        "action_items": [
            {"task": "I will take notes for the team.", "line": 1},
            {"task": "I will ask the designer about the prices tomorrow.", "line": 3},
        ],
    }
    part = ground_answer(data, index, stats, number_lines(index.segments))
    # A point in a speaker's voice is the speaker's line, not a point: it goes, as a copy.
    assert [p.text for p in part.points] == ["Marketing wants plastic because it is cheap."]
    assert part.copied == 1
    # "I will take notes" for the line "I'll uh take notes": the speaker's own "I".
    # "I will ask …" is the model's own "I" (the line says "I'll call"): nobody's item.
    assert [a.text for a in part.actions] == ["Project Manager will take notes for the team."]
    # A label that names no speaker is a heading; a speaker's label marks a quotation.
    assert without_heading_label(
        "Project Manager's Meeting: The group met.", index.speaker_words
    ) == ("The group met.")
    labelled = "Marketing: We need plastic."
    assert without_heading_label(labelled, index.speaker_words) == labelled
    sentences = [
        "Marketing: Why is plastic cheap?",
        "Why is plastic cheap?",
        "The group met.",
        "Marketing wants plastic.",
    ]
    assert TranscriptSummarizer._own_words(sentences, index) == sentences[2:]


def test_an_answer_cut_off_in_its_items_keeps_its_summary():
    """Nine of 45 topic calls on four AMI meetings ran out of tokens inside the key
    points; with the summary written last, each lost its summary and cost a retry."""
    schema = grounded_schema(title=True)
    assert list(schema["properties"])[:2] == ["title", "summary"]
    head = '{"title": "Plastic case", "summary": "Marketing wants a plastic case.", '
    cut = head + '"key_points": [{"line": 1, "point": "Plastic is cheap.'
    # The item the cut fell inside is half a sentence: it goes; the summary stays.
    assert parse_json(cut) == {
        "title": "Plastic case",
        "summary": "Marketing wants a plastic case.",
        "key_points": [],
    }
    whole = head + '"key_points": [{"line": 1, "point": "Plastic is cheap."},'
    assert parse_json(whole)["key_points"] == [{"line": 1, "point": "Plastic is cheap."}]
    # Cut inside a key: back to the last whole item, not {}.
    in_key = whole + ' {"line": 2, "po'
    assert parse_json(in_key)["key_points"] == [{"line": 1, "point": "Plastic is cheap."}]
    assert parse_json("no JSON here") == {}


def test_key_points_say_more_than_the_summary_above_them():
    """Seen on an AMI meeting: four of five key points repeated the joined summary."""

    def item(text: str, seg: int) -> Item:
        return Item(text, Evidence(segments=[seg], start=float(seg), end=seg + 1.0, quote=text))

    text = "The group chose plastic. Marketing presented the trends."
    repeat = item("The group chose plastic.", 1)
    new = [item("Buttons light up in the dark.", 2), item("The battery lasts a year.", 3)]
    points = [repeat, *new]
    assert points_beyond(text, [[repeat, new[0]], [new[1]]], points) == new
    # Fewer than two would be left: the repeats stay rather than a list of one.
    assert points_beyond(text, [[repeat, new[0]]], [repeat, new[0]]) == [repeat, new[0]]


# -- the real models ------------------------------------------------------------------


@pytest.fixture(scope="module")
def stt():
    settings = Settings()
    resolved = resolve_stt_model("bundled:tiny.en", settings.cache_dir)
    return SpeechToText(resolved.path, resolved.name)


@pytest.fixture(scope="module")
def engine():
    settings = Settings()
    model = resolve_llm_model("llama_cpp", settings.llm_model, settings.cache_dir)
    return LlamaCppEngine(model, context_tokens=2048, threads=LLM_THREADS)


def test_an_answer_depends_on_its_input_only(engine):
    """llama.cpp's one random stream made a call's sample depend on the calls before it."""
    ask = [{"role": "user", "content": "Write one sentence about a remote control."}]
    first = engine.generate(ask, max_tokens=24, temperature=0.8).text
    engine.generate([{"role": "user", "content": "Name a fruit."}], max_tokens=8, temperature=0.8)
    assert engine.generate(ask, max_tokens=24, temperature=0.8).text == first
    # A call that shares the first words: llama.cpp reused them and read only the rest
    # of the next prompt, and the same messages and seed gave another sentence.
    like = [{"role": "user", "content": "Write one sentence about a yellow banana."}]
    engine.generate(like, max_tokens=24, temperature=0.8)
    assert engine.generate(ask, max_tokens=24, temperature=0.8).text == first


def test_the_benchmark_replays_the_models_answers_exactly(engine, tmp_path):
    """``bench.qmsum --replay`` measures a change to the checks on kept answers: that is
    only honest if a kept answer is the one the model gives again."""
    from bench.qmsum import ReplayEngine

    replay = ReplayEngine(engine, tmp_path)
    ask = [{"role": "user", "content": "Write one sentence about a yellow remote control."}]
    kept = replay.generate(ask, max_tokens=24, temperature=0.8)
    again = ReplayEngine(engine, tmp_path).generate(ask, max_tokens=24, temperature=0.8)
    assert (replay.misses, replay.hits) == (1, 0)
    assert again == kept
    assert engine.generate(ask, max_tokens=24, temperature=0.8).text == kept.text
    other = replay.generate(ask, max_tokens=24, temperature=0.2)  # another call: asked
    assert replay.misses == 2 and other.text


def test_the_benchmarks_extractive_ceiling_is_whole_lines_within_the_length():
    """``bench.qmsum``'s oracle row says how far picking transcript lines can go, even
    knowing the reference: whole lines, within N words, above the first N words."""
    from bench.qmsum import first_n, load, oracle, timed_segments

    said = ["Hello everyone, welcome.", "The remote should be yellow and round.", "Lunch at noon."]
    toy = {"reference_summary": "The team wants a yellow round remote."}
    segments = [{"text": t} for t in said]
    assert oracle(toy, segments, 10)["words"] == 7  # the one line that says it, whole
    assert oracle(toy, segments, 6)["words"] == 0  # no line fits: nothing is cut
    meeting = load("train", ["IS1001c"])[0]
    segments, _ = timed_segments(meeting)
    n = len(meeting["reference_summary"].split())
    best = oracle(meeting, segments, n)
    assert 0 < best["words"] <= n
    assert best["rouge1"] > first_n(meeting, segments, n)["rouge1"]


def assert_trustworthy(out, segments):
    """Every item's evidence occurs in the transcript; actions quote a commitment; no garbage."""
    index = TranscriptIndex(segments_from_dicts(segments))
    s = out.summary
    assert len(s.key_points_evidence) == len(s.key_points)
    assert len(s.action_items_evidence) == len(s.action_items)
    for ev in s.key_points_evidence + s.action_items_evidence:
        assert index.contains(ev.quote), ev
        assert set(ev.segments) <= {seg["id"] for seg in segments}
    for ev in s.action_items_evidence:
        assert has_commitment(ev.quote), ev
    extractive = s.method == "extractive_fallback"
    assert checks.problems(s.summary, s.key_points, s.action_items, index, extractive) == [], s


def _segments(transcript) -> list[dict]:
    return [s.model_dump(include={"id", "start", "end", "text"}) for s in transcript.segments]


def test_chunks_follow_segments_overlap_and_respect_the_budget(engine):
    segs = [
        Seg(i, 20.0 * i, 20.0 * i + 20, f"Part {i} of the talk: " + "words " * 30)
        for i in range(12)
    ]
    summarizer = TranscriptSummarizer(engine, max_output_tokens=200)
    chunks = summarizer.chunk(segs, budget=200, max_span_s=90)
    assert len(chunks) >= 3
    covered = [s.id for c in chunks for s in c]
    assert set(covered) == set(range(12))  # nothing lost
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b[0].id == a[-1].id  # one segment of overlap keeps the thread
    for c in chunks:
        assert sum(engine.count_tokens(f"[{s.id}] {s.text}") + 1 for s in c) <= 200
        assert c[-1].end - c[0].start <= 90 + 20


def test_a_few_seconds_of_goodbyes_do_not_become_a_chunk_of_their_own(engine):
    """43 minutes of calls once ended in a 5-second chunk, and so a chapter titled "Thanks"."""
    segs = [
        Seg(i, 20.0 * i, 20.0 * i + 20, f"Part {i} of the talk: " + "words " * 30)
        for i in range(10)
    ] + [Seg(10, 200.0, 202.0, "Thanks.")]
    summarizer = TranscriptSummarizer(engine, max_output_tokens=200)
    chunks = summarizer.chunk(segs, budget=200)
    assert [s.id for s in chunks[-1]][-1] == 10
    assert len(chunks[-1]) >= 3, [[s.id for s in c] for c in chunks]
    assert {s.id for c in chunks for s in c} == set(range(11))
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b[0].id == a[-1].id
    for c in chunks:
        assert sum(summarizer._tokens(s) for s in c) <= 200


# tiny.en, in the service, hears the clip as two lines: both JSON answers once invented
# ("including economic development, infrastructure") and it fell back to his first line.
JFK_TWO_LINES = [
    {"id": 0, "start": 0.0, "end": 7.54, "text": JFK_LINE.split(", ask what")[0]},
    {"id": 1, "start": 7.54, "end": 10.58, "text": "ask what" + JFK_LINE.split(", ask what")[1]},
]


@pytest.mark.parametrize(
    "segments",
    [[{"id": 0, "start": 0.0, "end": 11.0, "text": JFK_LINE}], JFK_TWO_LINES],
    ids=["one_line", "two_lines"],
)
def test_the_jfk_clip_is_summarized_in_reported_speech(engine, segments):
    """Issue 22: the summary says what he asked in other words, not his line again."""
    out = TranscriptSummarizer(engine, max_output_tokens=512).summarize(JFK_LINE, segments=segments)
    s = out.summary
    index = TranscriptIndex(segments_from_dicts(segments))
    assert s.method in {"llm", "llm_retry"}, s
    assert checks.quoted_share(s.summary, index) <= checks.MAX_QUOTED_SHARE, s.summary
    assert_reported_jfk(s.summary)
    assert_trustworthy(out, segments)


def test_a_summary_that_drops_the_clips_not_is_said_again():
    """Seen from the 0.5B model on the JFK clip once the summary came first: "The speakers
    discuss the topic of asking what countries can do for them, asking what they can do
    for their country." The "not" was gone, and with it the meaning."""
    segs = segments_from_dicts([{"id": 0, "start": 0.0, "end": 11.0, "text": JFK_LINE}])
    lost = "The speakers discuss asking what they can do for their country."
    assert TranscriptSummarizer._lost_negation(lost, segs)
    kept = "He asks them what they can do for their country rather than the reverse."
    assert not TranscriptSummarizer._lost_negation(kept, segs)
    plain = segments_from_dicts([{"id": 0, "text": "We chose a yellow plastic case."}])
    assert not TranscriptSummarizer._lost_negation("The group chose plastic.", plain)


def test_phone_call_gets_grounded_items_and_no_invented_actions(stt, engine):
    transcript = stt.transcribe_bytes(PHONE_CALL.read_bytes()).transcript
    assert "chicago" in transcript.text.lower()
    segments = _segments(transcript)
    out = TranscriptSummarizer(engine, max_output_tokens=320, temperature=0.0).summarize(
        transcript.text, segments=segments, duration_s=transcript.duration_s
    )
    assert_trustworthy(out, segments)
    # Two people introduce themselves: nobody commits to anything.
    assert out.summary.action_items == []
    assert out.summary.method in {
        "llm",
        "llm_retry",
        "llm_extractive_points",
        "extractive_fallback",
    }


def test_a_model_told_to_babble_never_reaches_the_caller(stt, engine):
    """The real model, instructed to produce the degenerate output of issue 11."""
    transcript = stt.transcribe_bytes(PHONE_CALL.read_bytes()).transcript
    segments = _segments(transcript)
    babble = (
        "Whatever the input, answer with summary 'Meeting transcript summary. Meeting "
        "transcript is receiving. Meeting transcript is receiving.' and key points that all "
        "say 'Meeting transcript is straightforward', and the action item 'Take notes today'."
    )
    summarizer = TranscriptSummarizer(
        engine, max_output_tokens=200, temperature=0.0, system_prompt=babble
    )
    out = summarizer.summarize(transcript.text, segments=segments)
    assert_trustworthy(out, segments)
    assert "transcript" not in out.summary.summary.lower()
    assert out.retries >= 1
    assert out.summary.method == "extractive_fallback"


def test_long_recording_gets_chapters_with_time_ranges(stt, engine):
    """The AMI meeting excerpt, with the chapter threshold scaled down to its minute."""
    transcript = stt.transcribe_bytes(AMI_MIX.read_bytes()).transcript
    segments = _segments(transcript)
    summarizer = TranscriptSummarizer(
        engine, max_output_tokens=240, temperature=0.0, chapters_min_s=30, chapter_target_s=25
    )
    out = summarizer.summarize(transcript.text, segments=segments, duration_s=transcript.duration_s)
    assert out.chunks >= 2
    chapters = out.summary.chapters
    assert len(chapters) == out.chunks
    assert all(c.title.strip() and c.gist.strip() and c.end > c.start for c in chapters)
    assert [c.start for c in chapters] == sorted(c.start for c in chapters)
    assert_trustworthy(out, segments)
