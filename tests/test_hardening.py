"""Issue 12's attack classes against the running service, and that it keeps answering meanwhile.

Through `aipp serve` (the session ``service``: keys on): oversize and hung bodies,
auth before the body, duration caps judged by packets not headers, chat limits,
tunnelled private addresses, the webhook secret. Keys-off exposure (Host and
cross-site checks) runs the same guard middleware on a real uvicorn server, since
the session service has keys on (where those checks are moot by design).
"""

from __future__ import annotations

import io
import ipaddress
import socket
import threading
import time

import av
import httpx
import numpy as np
import pytest
from fastapi import Depends, FastAPI, File, UploadFile

from app.api.auth import Authenticator, Principal
from app.api.deps import principal
from app.net.url_guard import URLFetchError, check_ip, check_url
from tests.conftest import DATA, make_key

serve = pytest.mark.serve
LLM = "qwen2.5-0.5b-instruct-q4_k_m"
TEN_GIB = 10 * 1024**3
BODY_ROUTES = ("/v1/tasks", "/v1/summarize", "/v1/audio/transcriptions", "/v1/chat/completions")


def flac_silence(seconds: int, rate: int = 8000, unknown_length: bool = True) -> bytes:
    """A small FLAC of silence; with ``unknown_length`` its header claims no length at all."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        block = np.zeros((1, rate), dtype=np.int16)
        for i in range(seconds):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, i * rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = bytearray(buf.getvalue())
    if unknown_length:  # STREAMINFO's 36-bit total-samples field: 0 means unknown
        data[21] &= 0xF0
        data[22:26] = b"\0\0\0\0"
    return bytes(data)


def raw_request(url: str, head: str, body: bytes = b"", wait_s: float = 20.0) -> tuple[int, bytes]:
    """Send ``head`` (and part of a body) on a raw socket; return the status and what came back."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(head.encode() + body)
        data = b""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:  # the guard answers "Connection: close"
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
    if not data:
        raise AssertionError("no answer")
    return int(data.split(b" ", 2)[1]), data


def head(path: str, headers: dict[str, str], length: int | str) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


@pytest.fixture(scope="module")
def key(service) -> str:
    return make_key(service, "hardening")


@pytest.fixture(scope="module")
def auth(key) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- Bounded bodies ---------------------------------------------------------------------


@serve
def test_oversize_content_length_is_refused_at_once_while_the_service_answers(service, auth):
    # A hung request that declared 10 GiB and sends nothing stays open...
    hung = socket.create_connection(("127.0.0.1", int(service.url.rsplit(":", 1)[1])))
    try:
        hung.sendall(
            head(
                "/v1/tasks", {**auth, "Content-Type": "multipart/form-data; boundary=x"}, TEN_GIB
            ).encode()
        )
        # ...while every body route refuses the same declaration at once, before reading it,
        for path in BODY_ROUTES:
            ctype = "application/json" if "chat" in path else "multipart/form-data; boundary=x"
            t0 = time.monotonic()
            status, raw = raw_request(
                service.url, head(path, {**auth, "Content-Type": ctype}, TEN_GIB)
            )
            assert status == 413, (path, raw[:300])
            assert time.monotonic() - t0 < 15
            assert b"too_large" in raw
        # and the rest of the service keeps answering.
        assert httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200
        assert httpx.get(f"{service.url}/v1/tasks", headers=auth, timeout=30).status_code == 200
    finally:
        hung.close()


@serve
def test_chunked_body_is_stopped_at_the_limit(service, auth):
    # AIPP_MAX_UPLOAD_MB=8 in the session service; no Content-Length, so only counting works.
    def chunks():
        yield (
            b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.flac"\r\n'
            b"Content-Type: audio/flac\r\n\r\n"
        )
        block = b"\1" * (1024 * 1024)
        for _ in range(12):
            yield block
        yield b"\r\n--x--\r\n"

    resp = httpx.post(
        f"{service.url}/v1/tasks",
        content=chunks(),
        headers={**auth, "Content-Type": "multipart/form-data; boundary=x"},
        timeout=60,
    )
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "file_too_large"
    assert httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200


@serve
@pytest.mark.parametrize("path", BODY_ROUTES)
def test_key_is_checked_before_the_body_is_read(service, path):
    # 1000 bytes declared, 10 sent: an answer now means the body was never awaited.
    ctype = "application/json" if "chat" in path else "multipart/form-data; boundary=x"
    status, raw = raw_request(
        service.url, head(path, {"Content-Type": ctype}, 1000), body=b"0123456789", wait_s=15
    )
    assert status == 401, raw[:300]
    assert b"missing_api_key" in raw
    bad = {"Content-Type": ctype, "Authorization": "Bearer aipp_not_a_key"}
    status, raw = raw_request(service.url, head(path, bad, 1000), body=b"x", wait_s=15)
    assert status == 401 and b"invalid_api_key" in raw


# --- Duration judged by the audio, not its header ---------------------------------------


@serve
def test_duration_cap_holds_when_the_header_has_no_length(service, auth):
    long_flac = flac_silence(25 * 60)  # 25 min, header says "unknown"; sync cap is 10 min
    assert len(long_flac) < 1024 * 1024
    files = {"file": ("long.flac", long_flac, "audio/flac")}
    sync = httpx.post(f"{service.url}/v1/summarize", files=files, headers=auth, timeout=120)
    assert sync.status_code == 413, sync.text
    assert sync.json()["error"]["code"] == "audio_too_long"
    oai = httpx.post(
        f"{service.url}/v1/audio/transcriptions",
        files=files,
        data={"model": "whisper-1"},
        headers=auth,
        timeout=120,
    )
    assert oai.status_code == 413, oai.text
    assert oai.json()["error"]["code"] == "audio_too_long"
    assert httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200


@serve
def test_task_duration_cap_holds_when_the_header_has_no_length(service, auth):
    over = flac_silence(181 * 60, rate=4000)  # the task cap is 180 min
    resp = httpx.post(
        f"{service.url}/v1/tasks",
        files={"file": ("over.flac", over, "audio/flac")},
        headers=auth,
        timeout=120,
    )
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "audio_too_long"


# --- LLM routes ---------------------------------------------------------------------------


@serve
def test_chat_max_tokens_is_capped_by_the_output_limit(service, auth):
    body = {"model": LLM, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 600}
    resp = httpx.post(f"{service.url}/v1/chat/completions", json=body, headers=auth, timeout=60)
    assert resp.status_code == 400, resp.text  # AIPP_LLM_MAX_OUTPUT_TOKENS defaults to 512
    assert resp.json()["error"]["param"] == "max_tokens"


@serve
@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": 5},
        {"type": "thing"},
        {"type": "object", "required": "city"},
        {"anyOf": []},
        "not a schema",
    ],
    ids=["properties-not-object", "unknown-type", "required-not-list", "empty-anyof", "string"],
)
def test_malformed_json_schema_is_a_400(service, auth, schema):
    body = {
        "model": LLM,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    resp = httpx.post(f"{service.url}/v1/chat/completions", json=body, headers=auth, timeout=60)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"].startswith("response_format.json_schema")


# --- Tunnelled private addresses ----------------------------------------------------------

TUNNELLED = [
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:c0a8:101::",  # 6to4 of 192.168.1.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1 (XOR-ed)
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 of 169.254.169.254
    "::ffff:10.0.0.1",  # IPv4-mapped
    "::127.0.0.1",  # IPv4-compatible
    "2001:db8::5efe:a00:1",  # ISATAP id carrying 10.0.0.1
]


@pytest.mark.parametrize("ip", TUNNELLED)
def test_tunnelled_private_addresses_are_refused(ip):
    with pytest.raises(URLFetchError) as info:
        check_ip(ip)
    assert info.value.code == "url_not_allowed"
    with pytest.raises(URLFetchError):
        check_url(f"http://[{ipaddress.ip_address(ip)}]/a.flac")


@pytest.mark.parametrize("ip", ["2002:808:808::1", "64:ff9b::808:808", "2606:4700::1111"])
def test_public_and_translated_public_addresses_pass(ip):
    check_ip(ip)


@serve
def test_tunnelled_addresses_are_refused_at_submission(service, auth):
    # 127.0.0.1 is allow-listed in the session service; a 6to4 form of it is still refused.
    for ip in ("2002:7f00:1::", "2002:a00:1::", "64:ff9b::a9fe:a9fe"):
        resp = httpx.post(
            f"{service.url}/v1/tasks",
            json={"audio_url": f"http://[{ip}]/a.flac"},
            headers=auth,
            timeout=60,
        )
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == "url_not_allowed"


# --- Webhook signing secret ----------------------------------------------------------------


@serve
def test_tenant_reads_its_webhook_secret(service, auth):
    from typer.testing import CliRunner

    from app.cli.main import _register_subcommands, cli

    _register_subcommands()

    resp = httpx.get(f"{service.url}/v1/webhook-secret", headers=auth, timeout=30)
    assert resp.status_code == 200, resp.text
    secret = resp.json()["webhook_secret"]
    assert secret.startswith("whsec_") and resp.json()["tenant"] == "hardening"
    assert resp.headers["cache-control"] == "no-store"
    assert httpx.get(f"{service.url}/v1/webhook-secret", timeout=30).status_code == 401
    env = {"AIPP_DATA_DIR": str(service.data_dir), "AIPP_DATABASE_URL": ""}
    out = CliRunner().invoke(cli, ["keys", "webhook-secret", "--tenant", "hardening"], env=env)
    assert out.exit_code == 0, out.output
    assert out.output.strip() == secret


# --- Exposure with keys off: Host and cross-site checks on a real server -------------------


@pytest.fixture(scope="module")
def keys_off_server(tmp_path_factory):
    """The guard middleware around a real FastAPI app with keys off, on uvicorn."""
    import uvicorn

    from app.api.errors import install_error_handlers
    from app.api.guard import GuardPolicy, HTTPGuard, depends_on
    from app.storage.sql.engine import make_engine
    from app.storage.sql.migrate import upgrade
    from app.tasks.door import Tenants
    from tests.servers import free_port

    url = f"sqlite:///{tmp_path_factory.mktemp('keys-off') / 'aipp.db'}"
    upgrade(url)
    authenticator = Authenticator(Tenants(make_engine(url)), required=False)
    api = FastAPI()
    install_error_handlers(api)
    api.state.authenticator = authenticator

    @api.get("/v1/tasks")
    def tasks(caller: Principal = Depends(principal)) -> dict:
        return {"tenant": caller.tenant_name}

    @api.post("/v1/tasks")
    async def create(file: UploadFile = File(...), caller: Principal = Depends(principal)) -> dict:
        return {"size": len(await file.read()), "tenant": caller.tenant_name}

    policy = GuardPolicy(
        max_body_bytes=1024 * 1024, auth_required=False, trusted_hosts=("aipp.example.com",)
    )
    api.add_middleware(
        HTTPGuard,
        policy=policy,
        authenticator=authenticator,
        router=api.router,
        needs_caller=lambda route: depends_on(route, principal),
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{base}/v1/tasks", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield base
    server.should_exit = True
    thread.join(10)


def test_rebound_host_names_are_refused_when_keys_are_off(keys_off_server):
    ok = httpx.get(f"{keys_off_server}/v1/tasks", timeout=10)
    assert ok.status_code == 200 and ok.json()["tenant"] == "local"
    for host in ("attacker.example", "localhost.attacker.example", "aipp.example.com.evil"):
        resp = httpx.get(f"{keys_off_server}/v1/tasks", headers={"Host": host}, timeout=10)
        assert resp.status_code == 400, host
        assert resp.json()["error"]["code"] == "untrusted_host"
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "aipp.example.com", "10.1.2.3"):
        resp = httpx.get(f"{keys_off_server}/v1/tasks", headers={"Host": host}, timeout=10)
        assert resp.status_code == 200, host


def test_cross_site_submissions_are_refused_when_keys_are_off(keys_off_server):
    files = {"file": ("a.flac", (DATA / "jfk.flac").read_bytes()[:1000])}
    refused = [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://attacker.example"},
        {"Origin": "null"},
    ]
    for headers in refused:
        resp = httpx.post(f"{keys_off_server}/v1/tasks", files=files, headers=headers, timeout=10)
        assert resp.status_code == 403, headers
        assert resp.json()["error"]["code"] == "cross_site_request"
    allowed = [
        {},
        {"Sec-Fetch-Site": "same-origin", "Origin": keys_off_server},
        {"Origin": keys_off_server},
        {"Sec-Fetch-Site": "none"},
    ]
    for headers in allowed:
        resp = httpx.post(f"{keys_off_server}/v1/tasks", files=files, headers=headers, timeout=10)
        assert resp.status_code == 200, (headers, resp.text)
    # Reads are not state changes: a cross-site GET is left to the browser's CORS rules.
    cross_get = httpx.get(
        f"{keys_off_server}/v1/tasks", headers={"Sec-Fetch-Site": "cross-site"}, timeout=10
    )
    assert cross_get.status_code == 200


def test_non_loopback_arrival_needs_a_key_in_auto_mode():
    from app.api.auth import arrived_beyond_loopback, auth_required
    from app.core.settings import Settings

    assert arrived_beyond_loopback({"server": ("10.0.0.5", 8000)})
    assert not arrived_beyond_loopback({"server": ("127.0.0.1", 8000)})
    assert not arrived_beyond_loopback({"server": None})
    loopback = Settings(auth="auto", host="127.0.0.1")
    assert not auth_required(loopback)
    # The manifests bind the Serve proxy to 0.0.0.0 without setting AIPP_HOST.
    assert auth_required(loopback, ["0.0.0.0"])
    assert auth_required(loopback, ["::"])
    assert not auth_required(Settings(auth="off", host="0.0.0.0"), ["0.0.0.0"])


# --- Embedded Redis: no open TCP port without a password; private files --------------------


def test_embedded_redis_is_private(tmp_path):
    import stat

    import redis

    from app.storage.redis.embedded import start_embedded_redis

    with start_embedded_redis(tmp_path / "r") as server:
        assert server.url.startswith("unix://") and server.port is None
        assert stat.S_IMODE((tmp_path / "r").stat().st_mode) == 0o700
        assert stat.S_IMODE(server.unix_socket.stat().st_mode) & 0o077 == 0
        assert stat.S_IMODE((tmp_path / "r" / "redis.conf").stat().st_mode) == 0o600
        assert redis.Redis.from_url(server.url).ping()
    with start_embedded_redis(tmp_path / "t", unix_socket=False) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"PING\r\n")
            assert sock.recv(100).startswith(b"-NOAUTH")
        assert redis.Redis.from_url(server.url).ping()
        for path in (tmp_path / "t").iterdir():
            if path.is_file():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_an_instruction_the_context_cannot_hold_is_refused_at_submission():
    """422 now, not 202 and three "transient" failures later."""
    from types import SimpleNamespace

    from app.core.settings import Settings
    from app.core.task_vocabulary import TaskOptions
    from app.tasks.submit import Refusal, SubmissionError, check_instruction

    small = SimpleNamespace(settings=Settings(llm_context_tokens=1800, llm_max_output_tokens=512))
    check_instruction(TaskOptions(instruction="focus on decisions"), small)  # fits
    with pytest.raises(SubmissionError) as refused:
        check_instruction(TaskOptions(instruction="decisions " * 199), small)
    assert refused.value.kind is Refusal.INVALID
    assert refused.value.code == "instruction_too_long"
    assert "AIPP_LLM_CONTEXT_TOKENS=1800" in refused.value.message
