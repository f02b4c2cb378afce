"""Ray token authentication that works on a fresh machine.

Ray 2.60 turns token auth on for local clusters. ``ray.init()`` creates the token
itself, but ``ray start --head``, ``ray job submit`` and the dashboard REST clients
only read one, so on a machine with no ``~/.ray/auth_token`` they fail with
"Token authentication is enabled but no authentication token was found".
Everything of ours that starts or joins Ray calls :func:`ensure_ray_token` first:
auth stays on, and the token is generated the documented way
(``ray get-auth-token --generate``) and kept private (mode 0600).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


class RayAuthError(RuntimeError):
    """The token could not be found or created."""


def token_path() -> Path:
    """Where Ray reads the token: ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    custom = os.environ.get(TOKEN_PATH_ENV)
    return Path(custom).expanduser() if custom else Path.home() / ".ray" / "auth_token"


def _ray_cli() -> list[str]:
    exe = Path(sys.executable).with_name("ray")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]


def _generate(path: Path) -> None:
    """`ray get-auth-token --generate` writes ~/.ray/auth_token; a custom path gets a copy."""
    default = Path.home() / ".ray" / "auth_token"
    env = {k: v for k, v in os.environ.items() if k != TOKEN_PATH_ENV}
    old_umask = os.umask(0o077)  # the file and ~/.ray are created private
    try:
        proc = subprocess.run(
            [*_ray_cli(), "get-auth-token", "--generate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.umask(old_umask)
    token = proc.stdout.strip()
    if proc.returncode != 0 or not token:
        raise RayAuthError(
            f"`ray get-auth-token --generate` failed ({proc.returncode}): {proc.stderr[-500:]}"
        )
    if path != default:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)


def ensure_ray_token() -> Path | None:
    """Make sure Ray token auth is on and a private token exists; return its file.

    Returns ``None`` when the token comes from ``RAY_AUTH_TOKEN`` (nothing on disk).
    Sets ``RAY_AUTH_MODE=token`` for this process and the processes it starts,
    unless the operator chose a mode explicitly.
    """
    if AUTH_MODE_ENV not in os.environ:
        os.environ[AUTH_MODE_ENV] = "token"
        if "ray._raylet" in sys.modules:
            # Ray reads the mode once, at import; refresh it as Ray's own
            # enable-token-auth path does, or this process would not send the token.
            from ray._raylet import Config

            Config.initialize("")
    if os.environ[AUTH_MODE_ENV].lower() != "token":
        return None
    if os.environ.get(TOKEN_ENV):
        return None
    path = token_path()
    if not path.is_file() or not path.read_text().strip():
        _generate(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(0o600)  # a token readable by others lets them run code on the cluster
    return path
