"""Find the audio files a batch job should read: a local dir, a glob, or any fsspec URL.

Listing happens once, in the driver, from metadata only (no file is opened), so a
re-run can skip files it has already finished before reading a byte of them
(see :func:`fingerprint`). Reading happens later, inside Ray tasks, through the
same fsspec URL, so any filesystem fsspec knows (``s3://``, ``gs://``,
``abfs://``, ``file://`` ...) works wherever its driver package is installed.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem

DEFAULT_EXTENSIONS = (
    "wav",
    "flac",
    "mp3",
    "m4a",
    "mp4",
    "ogg",
    "oga",
    "opus",
    "webm",
    "aac",
    "wma",
    "aiff",
    "aif",
    "amr",
    "mka",
)
_GLOB_CHARS = set("*?[")
# Keys that change whenever an object's content does, in order of preference.
_VERSION_KEYS = (
    "ETag",
    "etag",
    "md5Hash",
    "generation",
    "version_id",
    "mtime",
    "LastModified",
    "last_modified",
    "updated",
    "modified",
    "created",
)


class SourceError(ValueError):
    """The input location cannot be listed (missing, empty, or an unknown protocol)."""


@dataclass(frozen=True)
class SourceFile:
    path: str  # what goes into the output rows: a local absolute path or a full URL
    size: int
    fingerprint: str  # size plus a version marker (mtime, ETag ...): equal means unchanged


def parse_extensions(spec: str | None) -> tuple[str, ...]:
    """``"wav, .FLAC,mp3"`` -> ``("wav", "flac", "mp3")``; empty or ``None`` -> the defaults."""
    if not spec:
        return DEFAULT_EXTENSIONS
    exts = tuple(dict.fromkeys(e.strip().lower().lstrip(".") for e in spec.split(",")))
    return tuple(e for e in exts if e) or DEFAULT_EXTENSIONS


def fingerprint(info: dict) -> str:
    size = int(info.get("size") or 0)
    for key in _VERSION_KEYS:
        value = info.get(key)
        if value not in (None, ""):
            return f"{size}:{key}={value}"
    return f"{size}:"


def _url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    if isinstance(fs, LocalFileSystem):
        return path
    return fs.unstrip_protocol(path)


def _wanted(path: str, extensions: tuple[str, ...]) -> bool:
    name = posixpath.basename(path.rstrip("/"))
    if not name or name.startswith("."):  # hidden files, macOS "._x.wav" resource forks
        return False
    _, dot, ext = name.rpartition(".")
    return bool(dot) and ext.lower() in extensions


def list_audio(
    source: str,
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
    storage_options: dict | None = None,
) -> list[SourceFile]:
    """All files under ``source`` (recursively for a directory) with a wanted extension.

    ``source`` may be a directory, a single file, or a glob (``/data/**/*.wav``,
    ``s3://bucket/2024-*/``); the result is sorted by path and free of duplicates.
    """
    try:
        fs, root = fsspec.core.url_to_fs(source, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise SourceError(f"cannot open input '{source}': {exc}") from None
    infos: dict[str, dict] = {}
    if _GLOB_CHARS & set(root):
        matches = fs.glob(root, detail=True)
        for path, info in matches.items():
            if info.get("type") == "directory":
                infos.update(fs.find(path, detail=True))
            else:
                infos[path] = info
    elif fs.isdir(root):
        infos = fs.find(root, detail=True)
    elif fs.isfile(root):
        infos = {root: fs.info(root)}
    else:
        raise SourceError(f"input '{source}' does not exist")
    files = [
        SourceFile(_url(fs, path), int(info.get("size") or 0), fingerprint(info))
        for path, info in infos.items()
        if info.get("type", "file") != "directory" and _wanted(path, extensions)
    ]
    return sorted(files, key=lambda f: f.path)


def read_bytes(path: str, storage_options: dict | None = None) -> bytes:
    """The whole file at ``path`` (a local path or any fsspec URL)."""
    with fsspec.open(path, "rb", **(storage_options or {})) as fh:
        return fh.read()
