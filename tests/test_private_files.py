"""What `aipp serve` leaves on the machine for other users: no readable files, no open ports.

The data dir holds webhook secrets (SQLite) and uploaded audio (blobs), so everything in
it must be 0600/0700 even when the process that writes it runs with a permissive umask:
Serve replicas on a joined cluster do not inherit `aipp serve`'s umask. The real
`aipp serve` (umask, loopback Ray) is checked end to end in tests/test_quickstart.py.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

from app.cli.deploy import exposed_listeners, is_loopback, listeners
from app.cli.serve import _exposure, _narrow_tree
from tests.cluster_fixtures import REPO

# A replica's start-up, in a process with a permissive umask: Services (migration,
# engine, blob store) plus one blob of each kind, a database write, and the embedded
# Redis that `aipp serve` keeps in the data dir. Prints every path under it with its mode.
_REPLICA = r"""
import io, json, os, sys
from pathlib import Path

os.umask(0o022)
from app.core.settings import Settings
from app.storage.clients import Services
from app.storage.redis.embedded import start_embedded_redis
from app.storage.sql.engine import writer

settings = Settings()
services = Services.from_settings(settings)
services.blobs.put(b"some audio")
services.blobs.put_stream(io.BytesIO(b"more audio"))
with writer(services.engine).begin() as conn:  # WAL: -wal and -shm exist while it is open
    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS probe (x)")
    conn.exec_driver_sql("INSERT INTO probe VALUES (1)")
with start_embedded_redis(settings.data_dir / "redis") as server:
    import redis
    redis.Redis.from_url(server.url).set("k", "v")
    root = settings.data_dir
    modes = {str(p.relative_to(root)): p.lstat().st_mode for p in root.rglob("*")}
    modes["."] = root.stat().st_mode
    print(json.dumps(modes))
"""


def test_a_replica_with_umask_022_leaves_nothing_readable_by_others(tmp_path):
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIPP_")}
    env.update(AIPP_DATA_DIR=str(data), PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", _REPLICA],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    modes = json.loads(proc.stdout.strip().splitlines()[-1])
    names = set(modes)
    # What the service really creates there (so the walk is not vacuous).
    for expected in ("aipp.db", "aipp.db-wal", "aipp.db-shm", "aipp.migrate.lock", "blobs"):
        assert expected in names, sorted(names)
    assert sum(1 for n in names if n.startswith("blobs/") and len(Path(n).name) == 64) == 2
    assert any(n.startswith("redis/") for n in names), sorted(names)
    wide = {
        name: oct(stat.S_IMODE(mode))
        for name, mode in modes.items()
        if stat.S_IMODE(mode) & 0o077 and not stat.S_ISSOCK(mode)
    }
    assert not wide, wide
    for name, mode in modes.items():
        if stat.S_ISDIR(mode):
            assert stat.S_IMODE(mode) == 0o700, name
        elif stat.S_ISREG(mode):
            assert stat.S_IMODE(mode) == 0o600, name


def test_start_up_narrows_what_an_older_version_left_readable(tmp_path):
    (tmp_path / "blobs" / "ab").mkdir(parents=True)
    (tmp_path / "blobs").chmod(0o755)
    (tmp_path / "blobs" / "ab").chmod(0o755)
    db = tmp_path / "aipp.db"
    db.write_bytes(b"")
    db.chmod(0o644)
    (tmp_path / "link").symlink_to("/etc/hostname")  # never followed or changed
    _narrow_tree(tmp_path)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "blobs").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "blobs" / "ab").stat().st_mode) == 0o700
    assert stat.S_IMODE(Path("/etc/hostname").stat().st_mode) & 0o004


def test_listeners_reads_every_listening_socket_of_a_process_tree():
    """The start-up table's source: /proc, matched to the process tree, loopback told apart."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys, time\n"
            "socks = []\n"
            "for family, host in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET, '127.0.0.1'),"
            " (socket.AF_INET6, '::'), (socket.AF_INET6, '::1')):\n"
            "    s = socket.socket(family); s.bind((host, 0)); s.listen(); socks.append(s)\n"
            "print(' '.join(str(s.getsockname()[1]) for s in socks), flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wild4, lo4, wild6, lo6 = map(int, child.stdout.readline().split())
        found = {item.port: item for item in listeners(os.getpid())}
        assert {wild4, lo4, wild6, lo6} <= set(found)
        assert found[wild4].pid == child.pid and found[wild4].process == "python"
        exposed = {item.port for item in exposed_listeners(os.getpid())}
        assert {wild4, wild6} <= exposed
        assert not {lo4, lo6} & exposed
        table = _exposure(exposed_listeners(child.pid))
        assert f"0.0.0.0:{wild4}" in table and f"[::]:{wild6}" in table
        assert "docs/security.md" in table
    finally:
        child.stdin.close()
        child.wait(timeout=10)
    assert _exposure([]).startswith("nothing")


def test_loopback_includes_ipv4_mapped_addresses():
    """gRPC's loopback listeners show up as [::ffff:127.0.0.1] in /proc/net/tcp6."""
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::")
    assert not is_loopback("::ffff:10.0.0.1")
    with socket.socket() as s:  # the helper must not choke on this machine's own table
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert s.getsockname()[1] in {i.port for i in listeners() if is_loopback(i.host)}
