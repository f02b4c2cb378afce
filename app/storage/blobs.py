"""Content-addressed audio blobs on any fsspec filesystem.

A blob is stored under ``<root>/<namespace>/<sha[:2]>/<sha[2:4]>/<sha>`` (the
namespace is the tenant; blobs stored before namespaces sit at
``<root>/<sha[:2]>/<sha[2:4]>/<sha>`` and stay readable), so storing the same bytes
twice is free and idempotent, one tenant's audio is never another's file, and a
task only needs the URI that :meth:`BlobStore.put` returns.

Removing a blob that other tasks may still reference is :meth:`BlobStore.retire`:
the blob is moved aside, the references are counted again, and it comes back if
one appeared meanwhile; a submitter re-stores its bytes (:meth:`BlobStore.ensure`)
after its task row is committed. Together they never lose audio a task points to.

The root is a local directory by default (``<data_dir>/blobs``) or any fsspec URL
(``s3://bucket/prefix``, ``gs://...``, ``memory://...``) given the matching fsspec
backend is installed.

Writes go to a temporary name first and are then moved into place, so a
reader never sees half a blob (atomic on local disks; object stores publish
a whole object at once anyway).

On local disk the audio is private whatever the process umask: new directories
are 0700 and blobs 0600.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, BinaryIO

import fsspec
from fsspec.core import url_to_fs

_CHUNK = 1 << 20
_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


class BlobNotFound(FileNotFoundError):
    pass


class BlobStore:
    """Put/get blobs by content hash under one fsspec root."""

    def __init__(self, url: str | Path, **storage_options: object) -> None:
        url = str(url)
        fs, root = url_to_fs(url, **storage_options)
        self.fs: fsspec.AbstractFileSystem = fs
        self.root = root.rstrip("/") if root not in ("/", "") else root
        self.url = url
        if self._is_local:
            self._makedirs(self.root)

    @property
    def _is_local(self) -> bool:
        protocol = self.fs.protocol
        protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
        return "file" in protocols or "local" in protocols

    # --- paths ---------------------------------------------------------------

    def path_for(self, sha256: str, namespace: str | None = None) -> str:
        """Filesystem path (without protocol) of the blob with this hash."""
        sha256 = sha256.lower()
        if not _SHA.match(sha256):
            raise ValueError("not a sha256 hex digest")
        if namespace is None:
            return f"{self.root}/{sha256[:2]}/{sha256[2:4]}/{sha256}"
        if not _NAMESPACE.match(namespace):
            raise ValueError("a blob namespace is 1-64 letters, digits, '_' or '-'")
        return f"{self.root}/{namespace}/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def uri_of(self, sha256: str, namespace: str | None = None) -> str:
        """The URI :meth:`put` returns for content with this hash."""
        return self.fs.unstrip_protocol(self.path_for(sha256, namespace))

    def _path_from_uri(self, uri: str) -> str:
        """The path of ``uri``, which must be a blob URI of *this* store."""
        path = self.fs._strip_protocol(uri)
        if path != self.path_for(path.rsplit("/", 1)[-1], self.namespace_of(uri)):
            raise ValueError(f"not a blob of this store: {uri}")
        return path

    def namespace_of(self, uri: str) -> str | None:
        """The namespace (tenant) of a blob URI; ``None`` for one stored before them."""
        path = self.fs._strip_protocol(uri)
        prefix = f"{self.root}/" if self.root else ""
        parts = path[len(prefix) :].split("/") if path.startswith(prefix) else []
        return parts[0] if len(parts) == 4 else None

    # --- operations ----------------------------------------------------------

    def put(self, data: bytes, namespace: str | None = None) -> tuple[str, str]:
        """Store ``data``; returns ``(sha256, uri)``. Storing existing content is a no-op."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.path_for(sha256, namespace)
        if not self.fs.exists(path):
            self._write_atomic(path, lambda fh: fh.write(data))
        return sha256, self.fs.unstrip_protocol(path)

    def ensure(self, uri: str, data: bytes) -> bool:
        """Store ``data`` at ``uri`` again if it is gone (a concurrent :meth:`retire` took
        it before this caller's reference was visible); ``True`` if it had to."""
        path = self._path_from_uri(uri)
        if self.fs.exists(path):
            return False
        self._write_atomic(path, lambda fh: fh.write(data))
        return True

    def retire(self, uri: str, still_used: Callable[[], bool]) -> bool:
        """Remove the blob unless ``still_used()`` says a reference exists; ``True`` if gone.

        Moved aside first, then counted again, so a reference committed in between brings
        it back instead of losing the audio (see the module docstring).
        """
        path = self._path_from_uri(uri)
        aside = f"{path}.retiring-{uuid.uuid4().hex}"
        try:
            self.fs.mv(path, aside)
        except FileNotFoundError:
            return False
        if still_used():
            if self.fs.exists(path):  # a submitter stored it again meanwhile
                self.fs.rm_file(aside)
            else:
                self.fs.mv(aside, path)
            return False
        self.fs.rm_file(aside)
        return True

    def put_stream(
        self,
        stream: IO[bytes] | BinaryIO,
        max_bytes: int | None = None,
        namespace: str | None = None,
    ) -> tuple[str, str, int]:
        """Store a file-like object without holding it in memory; ``(sha256, uri, size)``.

        Raises ``ValueError`` (nothing stored) past ``max_bytes``.
        """
        self._makedirs(f"{self.root}/tmp")
        tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
        h = hashlib.sha256()
        size = 0
        try:
            with self._create(tmp) as out:
                while chunk := stream.read(_CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise ValueError(f"blob larger than {max_bytes} bytes")
                    h.update(chunk)
                    out.write(chunk)
            sha256 = h.hexdigest()
            path = self.path_for(sha256, namespace)
            if self.fs.exists(path):
                self.fs.rm(tmp)
            else:
                self._makedirs(path.rsplit("/", 1)[0])
                self.fs.mv(tmp, path)
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise
        return sha256, self.fs.unstrip_protocol(path), size

    def get(self, uri: str) -> bytes:
        path = self._path_from_uri(uri)
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError as exc:
            raise BlobNotFound(uri) from exc

    def open(self, uri: str) -> IO[bytes]:
        """A binary file object for streaming a large blob."""
        path = self._path_from_uri(uri)
        if not self.fs.exists(path):
            raise BlobNotFound(uri)
        return self.fs.open(path, "rb")

    def local_path(self, uri: str) -> Path | None:
        """The local file of ``uri`` when the store is on local disk (for ffmpeg etc.)."""
        return Path(self._path_from_uri(uri)) if self._is_local else None

    def exists(self, uri: str) -> bool:
        return self.fs.exists(self._path_from_uri(uri))

    def delete(self, uri: str) -> bool:
        """Remove the blob; ``False`` if it was not there. Other tasks may share it: a task's
        audio goes through :meth:`retire` instead."""
        path = self._path_from_uri(uri)
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            return False
        return True

    def _makedirs(self, path: str) -> None:
        """``makedirs -p``; on local disk each new directory is 0700 (parents included)."""
        if not self._is_local:
            self.fs.makedirs(path, exist_ok=True)
            return
        missing = []
        here = Path(path)
        while not here.is_dir():
            missing.append(here)
            here = here.parent
        for directory in reversed(missing):
            try:
                directory.mkdir(mode=0o700)
            except FileExistsError:  # another replica made it, also 0700
                pass

    def _create(self, path: str) -> IO[bytes]:
        """A new file to write; 0600 on local disk, whatever the process umask."""
        if not self._is_local:
            return self.fs.open(path, "wb")
        return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")

    def _write_atomic(self, path: str, write: object) -> None:
        parent = path.rsplit("/", 1)[0]
        self._makedirs(parent)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        try:
            with self._create(tmp) as fh:
                write(fh)  # type: ignore[operator]
            self.fs.mv(tmp, path)
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise


__all__ = ["BlobNotFound", "BlobStore"]
