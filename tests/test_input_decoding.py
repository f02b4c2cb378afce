"""What clients send is decoded by bounded validators: a valid value or a 4xx, never a 500.

Issue 30's cases, each replayed against the real app (``create_app`` on a real door)
on SQLite and on PostgreSQL: the five 500s (a deeply nested list cursor, a cursor date
that leaves years 1..9999 once its offset applies, in both directions, a 5,000-digit
``Range`` offset, a speaker name such as ``A\\1``), the PostgreSQL-only 500s (NUL in a
filename, an instruction or a path, a 600-character filename), a backslash-n in a name
becoming a newline in the summary, a carriage return and ``-->`` injecting subtitle
cues, and ESC, BEL, NUL and RLO reaching the documents. Plus the smaller gaps: the
Origin's port, the console's ``form-action``, URLs logged without their query.

No Ray: where the deployments would say which models they serve, a plain async
function answers instead (named as such); no route here runs a model.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.safe_text import check_storable, multi_line, one_line, safe_filename
from app.core.settings import Settings
from app.tasks.door import TaskDoor
from app.tasks.model_ids import ModelRegistry
from tests.app_fixtures import keyed_app
from tests.conftest import DATA

#: Characters that must never reach a document: ESC, BEL, NUL, RLO (and the other bidi
#: overrides and isolates), a carriage return.
FORBIDDEN = ["\x1b", "\x07", "\x00", "\u202e", "\u202a", "\u2066", "\u2069", "\r"]


async def served_models() -> dict:
    """Stands in for Pipeline.ready(): which models the (absent) deployments serve."""
    return {"stt": {"model": "whisper-tiny.en"}, "llm": {"model": "qwen2.5-0.5b"}}


class App:
    """The app on one database, with a key and helpers to plant finished tasks."""

    def __init__(self, client: TestClient, door: TaskDoor, key: str, tenant_id: str) -> None:
        self.client = client
        self.door = door
        self.headers = {"Authorization": f"Bearer {key}"}
        self.tenant_id = tenant_id

    def request(self, method: str, path: str, **kw: Any):
        headers = {**self.headers, **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def diarized_task(self, summary: str = "Speaker 1 will send the budget.") -> str:
        """A succeeded, diarized task with stored audio (what a runner would leave)."""
        sha, uri = self.door.services.blobs.put(b"RIFF" + bytes(2000))
        segments = [
            {"id": 0, "start": 0.0, "end": 2.0, "text": "Hello there.", "speaker": "speaker_1"},
            {"id": 1, "start": 2.0, "end": 4.0, "text": "Hi, I will.", "speaker": "speaker_2"},
        ]
        result = {
            "transcript": {
                "text": "Hello there. Hi, I will.",
                "language": "en",
                "duration_s": 4.0,
                "segments": segments,
                "speakers": [
                    {"id": "speaker_1", "speaking_s": 2.0},
                    {"id": "speaker_2", "speaking_s": 2.0},
                ],
            },
            "summary": {"summary": summary, "key_points": [], "action_items": []},
            "models": {"stt": "whisper-tiny.en", "llm": "qwen2.5-0.5b"},
            "timings": {},
        }
        task = self.door.services.store.create_finished(
            tenant_id=self.tenant_id,
            result=result,
            audio_uri=uri,
            audio_sha256=sha,
            audio_filename="meeting.wav",
        )
        return task.id


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def app(request, tmp_path_factory):
    """The real app on a fresh SQLite file or a fresh PostgreSQL database (keys on)."""
    with keyed_app(
        request, tmp_path_factory, served_models, tenant="decoding", url_allow=["127.0.0.1"]
    ) as keyed:
        yield App(keyed.client, keyed.door, keyed.key, keyed.tenant_id)


def _cursor(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _assert_names_field(resp, status: int, field: str) -> None:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error.get("field") == field or error["message"].startswith(field), error


# --- the five 500s -------------------------------------------------------------------


def test_a_deeply_nested_cursor_is_a_400(app):
    for nested in (b"[" * 3000, b"[" * 1500 + b"]" * 1500, b'{"a":' * 1000):
        resp = app.request("GET", "/v1/tasks", params={"cursor": _cursor(nested)})
        _assert_names_field(resp, 400, "cursor")
        assert resp.json()["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    "created",
    [
        "0001-01-01T00:00:00+01:00",  # one hour before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # one hour after year 9999 in UTC
        "0001-01-01T00:30:00+23:59",
    ],
)
def test_a_cursor_date_outside_years_1_to_9999_is_a_400(app, created):
    resp = app.request("GET", "/v1/tasks", params={"cursor": _cursor([created, "01ABC"])})
    _assert_names_field(resp, 400, "cursor")


def test_a_cursor_is_only_what_the_api_hands_out(app):
    hostile = [
        ["2024-01-01T00:00:00+00:00", "a\u0000b"],  # NUL: PostgreSQL cannot compare it
        ["2024-01-01T00:00:00+00:00", "x" * 5000],
        ["2024-01-01T00:00:00+00:00", 7],
        ["2024-01-01T00:00:00+00:00", "01ABC", "extra"],
        {"created": "2024-01-01T00:00:00+00:00"},
    ]
    for value in hostile:
        resp = app.request("GET", "/v1/tasks", params={"cursor": _cursor(value)[:1000]})
        _assert_names_field(resp, 400, "cursor")
    # A cursor this API returned still pages.
    for _ in range(3):
        app.diarized_task()
    page = app.request("GET", "/v1/tasks", params={"limit": 1}).json()
    nxt = app.request("GET", "/v1/tasks", params={"limit": 1, "cursor": page["next_cursor"]})
    assert nxt.status_code == 200 and nxt.json()["data"][0]["id"] != page["data"][0]["id"]


def test_a_range_offset_of_5000_digits_is_a_416(app):
    task_id = app.diarized_task()
    path = f"/v1/tasks/{task_id}/audio"
    huge = "9" * 5000
    for header in (f"bytes={huge}-", f"bytes=0-{huge}", f"bytes=-{huge}", f"bytes={huge}-{huge}"):
        resp = app.request("GET", path, headers={"Range": header})
        assert resp.status_code in (206, 416), (header[:20], resp.status_code, resp.text[:200])
        if resp.status_code == 416:
            assert resp.json()["error"]["code"] == "range_not_satisfiable"
            assert resp.headers["content-range"] == "bytes */2004"
    # Past the end from the start; up to the end from 0; the whole file as a suffix.
    assert app.request("GET", path, headers={"Range": f"bytes={huge}-"}).status_code == 416
    whole = app.request("GET", path, headers={"Range": f"bytes=0-{huge}"})
    assert whole.status_code == 206 and whole.headers["content-range"] == "bytes 0-2003/2004"
    suffix = app.request("GET", path, headers={"Range": f"bytes=-{huge}"})
    assert suffix.status_code == 206 and len(suffix.content) == 2004
    # Digits that are not ASCII are not a range.
    arabic = app.request("GET", path, headers={"Range": "bytes=0-\u0663".encode()})
    assert arabic.status_code == 416


def _rename(app: App, task_id: str, name: str):
    return app.request(
        "PATCH", f"/v1/tasks/{task_id}/speakers", json={"names": {"speaker_1": name}}
    )


@pytest.mark.parametrize("name", ["A\\1", "A\\g<0>", "\\g<name>", "B\\", "$1 \\0"])
def test_a_speaker_name_is_never_a_regex_template(app, name):
    task_id = app.diarized_task()
    resp = _rename(app, task_id, name)
    assert resp.status_code == 200, resp.text
    summary = resp.json()["result"]["summary"]["summary"]
    assert summary == f"{name} will send the budget."


# --- names that end up in documents -------------------------------------------------


def test_a_backslash_n_in_a_name_stays_two_characters_in_the_summary(app):
    task_id = app.diarized_task()
    resp = _rename(app, task_id, "Ann\\nBo")
    assert resp.status_code == 200, resp.text
    summary = resp.json()["result"]["summary"]["summary"]
    assert summary == "Ann\\nBo will send the budget." and "\n" not in summary


def _blocks(text: str) -> list[list[str]]:
    """Subtitle blocks as a strict reader sees them: every line ending Python knows
    (\\r, \\n, \\v, \\f, U+0085, U+2028, U+2029...) counts; a blank line ends a block."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]


_TIMING = re.compile(r"^\d\d:\d\d:\d\d[.,]\d\d\d --> \d\d:\d\d:\d\d[.,]\d\d\d$")
#: What SubRip and WebVTT readers take for a cue's timing line.
_TIMING_LIKE = re.compile(r"^\s*(\d+:)?\d+:\d+[.,]\d+\s*-{2,}>")


def _cues(text: str, fmt: str) -> list[list[str]]:
    """The cue blocks of a subtitle file, each checked: [number,] one timing line, then
    text lines none of which a reader could take for a timing."""
    blocks = _blocks(text)
    if fmt == "vtt":
        assert blocks[0] == ["WEBVTT"]
        blocks = blocks[1:]
    for block in blocks:
        if fmt == "srt":
            assert block[0].isdigit(), block
            block = block[1:]
        assert _TIMING.match(block[0]), (fmt, block)
        assert len(block) >= 2 and not any(_TIMING_LIKE.match(x) for x in block[1:]), block
    return blocks


@pytest.mark.parametrize(
    "name",
    [
        "Eve\r00:00:09,000 --> 00:00:10,000\rInjected",
        "Eve\r\r3\r00:00:09.000 --> 00:00:10.000\rInjected",
        "Eve\u2028\u202900:00:09.000 --> 00:00:10.000",
        "Eve\x85\x0b\x0c--> -->",
    ],
)
def test_a_name_cannot_add_subtitle_cues(app, name):
    task_id = app.diarized_task()
    assert _rename(app, task_id, name).status_code == 200
    for fmt in ("srt", "vtt"):
        resp = app.request("GET", f"/v1/tasks/{task_id}/transcript", params={"format": fmt})
        assert resp.status_code == 200
        # Exactly the two segments' cues, each with one line of text.
        assert [len(c) for c in _cues(resp.text, fmt)] == ([3, 3] if fmt == "srt" else [2, 2])
        assert "\r" not in resp.text and "\u2028" not in resp.text


@pytest.mark.parametrize(
    "text",
    [
        "Hi\r00:00:09,000 --> 00:00:10,000\rInjected",
        "Hi\r\n\r\n2\r\n00:00:09,000 --> 00:00:10,000\r\nInjected",
        "Hi\u2028 00:00:09.000 ---> 00:00:10.000\u2029Injected",
    ],
)
def test_segment_text_cannot_add_subtitle_cues(text):
    from app.speech.subtitles import to_srt, to_vtt

    segments = [{"start": 0, "end": 1, "text": text}, {"start": 1, "end": 2, "text": "Bye."}]
    for fmt, render in (("srt", to_srt), ("vtt", to_vtt)):
        assert len(_cues(render(segments), fmt)) == 2, fmt
    # An arrow in the middle of a sentence is text, and stays.
    assert "a --> b" in to_srt([{"start": 0, "end": 1, "text": "a --> b"}])


CONTROL_NAME = "Eve\x1b[31m\x07 Mallory\x00\u202ereversed\u2066x\u2069"


def test_control_and_bidi_characters_never_reach_a_document(app):
    task_id = app.diarized_task()
    resp = _rename(app, task_id, CONTROL_NAME)
    assert resp.status_code == 200, resp.text
    stored = resp.json()["result"]["transcript"]["speakers"][0]["name"]
    assert stored == "Eve[31m Malloryreversedx"
    for fmt in ("txt", "srt", "vtt", "md", "json"):
        body = app.request("GET", f"/v1/tasks/{task_id}/transcript", params={"format": fmt})
        assert body.status_code == 200
        text = json.dumps(body.json(), ensure_ascii=False) if fmt == "json" else body.text
        for ch in FORBIDDEN:
            assert ch not in text, (fmt, repr(ch))
        assert "Malloryreversed" in text.replace("\\", "")
    view = app.request("GET", f"/v1/tasks/{task_id}").json()
    assert not any(ch in json.dumps(view, ensure_ascii=False) for ch in FORBIDDEN)


def test_names_are_nfc_one_line_and_bounded(app):
    task_id = app.diarized_task()
    resp = _rename(app, task_id, "  Jose\u0301\t\n  Mari\u0301a  ")
    assert resp.status_code == 200, resp.text
    assert resp.json()["result"]["transcript"]["speakers"][0]["name"] == "José María"
    assert _rename(app, task_id, "x" * 101).json()["error"]["code"] == "invalid_name"
    _assert_names_field(_rename(app, task_id, "x" * 1000), 422, "names.speaker_1")
    # Nothing left once cleaned: back to "Speaker 1".
    cleared = _rename(app, task_id, "\x00\u202e\n")
    assert cleared.status_code == 200
    assert cleared.json()["result"]["transcript"]["speakers"][0]["name"] is None


def _unescaped(markdown: str, token: str) -> bool:
    """Whether ``token`` occurs with none of its characters backslash-escaped."""
    pattern = "".join(f"(?<!\\\\){re.escape(ch)}" for ch in token)
    return re.search(pattern, markdown) is not None


def test_markdown_escapes_names_titles_and_text(app):
    hostile = "[click](javascript:alert(1)) <img src=x onerror=alert(1)> *bold* # `code`"
    task_id = app.diarized_task()
    assert _rename(app, task_id, hostile).status_code == 200
    md = app.request("GET", f"/v1/tasks/{task_id}/transcript", params={"format": "md"}).text
    for raw in ("](", "<img", "*bold*", "`code`"):
        assert not _unescaped(md, raw), raw
    # Text the client chose (the filename: the title) and the model's own words alike.
    sha, uri = app.door.services.blobs.put(b"x")
    md_task = app.door.services.store.create_finished(
        tenant_id=app.tenant_id,
        result={
            "transcript": {
                "text": "t",
                "language": "en",
                "duration_s": 1.0,
                "segments": [
                    {"id": 0, "start": 0, "end": 1, "text": "<script>x</script>", "speaker": "s1"}
                ],
                "speakers": [{"id": "s1", "speaking_s": 1.0, "name": hostile}],
            },
            "summary": {
                "summary": "# Heading\n- item <b>x</b>\n1. one",
                "key_points": ["[a](http://evil)"],
                "action_items": [],
            },
            "models": {"stt": "s", "llm": "l"},
            "timings": {},
        },
        audio_uri=uri,
        audio_sha256=sha,
        audio_filename="![x](http://evil/p.png)\u202e.wav",
    )
    md = app.request("GET", f"/v1/tasks/{md_task.id}/transcript", params={"format": "md"}).text
    for raw in ("](", "<img", "<script>", "<b>", "\n# H", "\n- item", "\n1. one"):
        assert not _unescaped(md, raw), raw
    assert "\u202e" not in md
    assert md.startswith("# !\\[x\\](http://evil/p.png).wav\n")
    assert "\\# Heading\n\\- item \\<b\\>x\\</b\\>\n1\\. one" in md


# --- PostgreSQL's NUL and length limits (a 500 there, not on SQLite) -----------------


def _submit(app: App, filename: str, **data: str):
    """A multipart upload written by hand: HTTP clients percent-encode control characters
    in a filename, a hostile one need not (and Starlette passes them on as sent)."""
    boundary = b"aipp-decoding-boundary"
    body = b""
    for name, value in data.items():
        body += b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (
            boundary,
            name.encode(),
            value.encode("utf-8", "surrogatepass"),
        )
    body += (
        b'--%s\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n'
        b"Content-Type: audio/flac\r\n\r\n" % (boundary, filename.encode())
    )
    body += (DATA / "jfk.flac").read_bytes() + b"\r\n--%s--\r\n" % boundary
    ctype = f"multipart/form-data; boundary={boundary.decode()}"
    return app.request("POST", "/v1/tasks", content=body, headers={"content-type": ctype})


def test_a_nul_or_an_overlong_filename_is_stored_clean(app):
    for sent, kept in [
        ("a\x00b.flac", "ab.flac"),
        ("x" * 600 + ".flac", "x" * 250 + ".flac"),
        ("call\u202e\x1b\x07.flac", "call.flac"),
        ("tab\tand\u2028line.flac", "tab and line.flac"),
    ]:
        resp = _submit(app, sent)
        assert resp.status_code == 202, (sent[:20], resp.text)
        view = app.request("GET", f"/v1/tasks/{resp.json()['id']}").json()
        assert view["audio"]["filename"] == kept


@pytest.mark.parametrize("instruction", ["focus\x00on decisions", "\ud800"])
def test_an_instruction_with_nul_or_a_lone_surrogate_is_a_422(app, instruction):
    if "\x00" in instruction:  # a multipart field can carry NUL; surrogates are not UTF-8
        _assert_names_field(_submit(app, "a.flac", instruction=instruction), 422, "instruction")
    body = json.dumps({"audio_url": "http://127.0.0.1:9/a.flac", "instruction": instruction})
    resp = app.request(
        "POST", "/v1/tasks", content=body, headers={"content-type": "application/json"}
    )
    _assert_names_field(resp, 422, "instruction")


def test_an_instruction_keeps_its_lines_and_loses_its_controls():
    from app.core.task_vocabulary import TaskOptions

    opts = TaskOptions(instruction="Focus on\r\ndecisions\x1b[0m\u202e.\tThanks")
    assert opts.instruction == "Focus on\ndecisions[0m.\tThanks"
    assert TaskOptions(instruction=" \x07 ").instruction is None


def test_a_nul_in_the_path_or_query_is_a_400_naming_it(app):
    for path, field in [
        ("/v1/tasks/a%00b", "path"),
        ("/v1/tasks/a%00b/audio", "path"),
        ("/v1/tasks/a%00b/transcript", "path"),
        ("/v1/tasks/a%0Ab", "path"),
        ("/v1/search?q=bud%00get", "q"),
    ]:
        _assert_names_field(app.request("GET", path), 400, field)
    resp = app.request("PATCH", "/v1/tasks/x%00/speakers", json={"names": {"speaker_1": "A"}})
    _assert_names_field(resp, 400, "path")


def test_an_audio_url_with_control_characters_is_a_422(app):
    for url in ("http://127.0.0.1:9/a\x00.flac", "http://127.0.0.1:9/a b.flac", "\ud800"):
        body = json.dumps({"audio_url": url})
        resp = app.request(
            "POST", "/v1/tasks", content=body, headers={"content-type": "application/json"}
        )
        _assert_names_field(resp, 422, "audio_url")


def test_a_json_body_nested_past_the_parser_is_a_400(app):
    resp = app.request(
        "POST", "/v1/tasks", content=b"[" * 100_000, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"


# --- the decoders themselves ----------------------------------------------------------


def test_the_decoders_are_total():
    assert one_line("a\r\nb\u2028c\x85d\te") == "a b c d e"
    assert one_line("\u202eevil\u2066\x00\x1b") == "evil"
    assert one_line("e\u0301") == "\u00e9"
    assert multi_line("a\r\nb\rc\u2029d\x00") == "a\nb\nc\nd"
    assert safe_filename("dir/sub/name.wav") == "name.wav"
    assert safe_filename("\x00\u202e") is None and safe_filename(None) is None
    assert safe_filename("y" * 300) == "y" * 255
    assert safe_filename("z" * 300 + ".tar.gz").endswith("z.gz")
    assert len(safe_filename("z" * 300 + ".tar.gz")) == 255
    assert safe_filename("a" * 300 + "." + "b" * 40) == ("a" * 300 + "." + "b" * 40)[:255]
    assert check_storable("fine") == "fine"
    for bad in ("a\x00", "\udfff"):
        with pytest.raises(ValueError):
            check_storable(bad)


# --- smaller gaps ------------------------------------------------------------------


@pytest.fixture
def keys_off(tmp_path):
    from app.api.main import create_app
    from app.tasks.pipeline import Pipeline

    settings = Settings(data_dir=tmp_path / "data", redis_url=None, auth="off")
    door = TaskDoor.from_settings(settings, ModelRegistry(served_models))
    with TestClient(create_app(Pipeline(None, None), door), base_url="http://127.0.0.1:8000") as c:
        yield c


def test_with_keys_off_the_origin_must_match_scheme_host_and_port(keys_off):
    files = {"file": ("a.flac", b"not audio")}
    for origin in (
        "http://127.0.0.1:9999",  # another port of the same host: another origin
        "https://127.0.0.1:8000",
        "http://127.0.0.1",
        "http://127.0.0.1:99999",
        "http://[::1]:8000",
        "null",
        "ftp://127.0.0.1:8000",
    ):
        resp = keys_off.post("/v1/tasks", files=files, headers={"Origin": origin})
        assert resp.status_code == 403, origin
        assert resp.json()["error"]["code"] == "cross_site_request"
    same = keys_off.post("/v1/tasks", files=files, headers={"Origin": "http://127.0.0.1:8000"})
    assert same.status_code == 422, same.text  # past the guard: the audio is refused


def test_with_keys_off_a_trusted_name_counts_on_its_default_or_this_port():
    from app.api.errors import APIError
    from app.api.guard import GuardPolicy, HTTPGuard

    guard = HTTPGuard(
        None,
        policy=GuardPolicy(1, False, trusted_hosts=("aipp.example.com",)),
        authenticator=None,
        router=None,
        needs_caller=lambda _: False,
    )

    def check(origin: str, host: str = "backend:8000") -> bool:
        try:
            guard._check_same_site({"origin": origin, "host": host}, "http")
        except APIError:
            return False
        return True

    assert check("https://aipp.example.com") and check("http://aipp.example.com:8000")
    assert not check("https://aipp.example.com:9999")
    assert not check("http://localhost:8000")  # loopback is never trusted by name
    assert check("http://backend:8000")


def test_the_console_csp_limits_form_actions(keys_off):
    csp = keys_off.get("/console").headers["content-security-policy"]
    assert "form-action 'self'" in csp and "frame-ancestors 'none'" in csp


def test_content_length_is_decoded_by_ascii_digits(keys_off):
    for value, status in ((b"\xb2", 400), (b"9" * 5000, 413), (b"1e3", 400)):
        resp = keys_off.post("/v1/tasks", content=b"", headers={"content-length": value})
        assert resp.status_code == status, value


def test_urls_are_logged_without_their_query(app):
    from app.net.url_guard import redact_url
    from tests.servers import LocalHTTPServer

    assert redact_url("https://u:p@b.s3.example/a.mp3?X-Amz-Signature=abc#t") == (
        "https://b.s3.example/a.mp3"
    )
    assert redact_url("http://[::1") == "<unparsable URL>" and redact_url(None) == ""

    audio = (DATA / "jfk.flac").read_bytes()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("ray.serve")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with LocalHTTPServer(lambda req: (200, {"Content-Type": "audio/flac"}, audio)) as srv:
            url = f"{srv.url}/jfk.flac?X-Amz-Signature=s3cr3t&token=t0k3n"
            resp = app.request("POST", "/v1/tasks", json={"audio_url": url})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert resp.status_code == 202, resp.text
    logged = "\n".join(r.getMessage() for r in records)
    assert f"{srv.url}/jfk.flac" in logged
    assert "s3cr3t" not in logged and "t0k3n" not in logged
    md = app.request("GET", f"/v1/tasks/{resp.json()['id']}/transcript", params={"format": "md"})
    assert md.status_code == 409  # queued; the title is redacted too once it has succeeded
