"""Content-addressed audio blobs on any fsspec filesystem.

A blob is stored under ``<root>/<sha[:2]>/<sha[2:4]>/<sha>``, so storing the
same bytes twice is free and idempotent, and a task only needs the URI that
:meth:`BlobStore.put` returns. The root is a local directory by default
(``<data_dir>/blobs``) or any fsspec URL (``s3://bucket/prefix``, ``gs://...``,
``memory://...``) given the matching fsspec backend is installed.

Writes go to a temporary name first and are then moved into place, so a
reader never sees half a blob (atomic on local disks; object stores publish
a whole object at once anyway).
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import IO, BinaryIO

import fsspec
from fsspec.core import url_to_fs

_CHUNK = 1 << 20


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
            self.fs.makedirs(self.root, exist_ok=True)

    @property
    def _is_local(self) -> bool:
        protocol = self.fs.protocol
        protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
        return "file" in protocols or "local" in protocols

    # --- paths ---------------------------------------------------------------

    def path_for(self, sha256: str) -> str:
        """Filesystem path (without protocol) of the blob with this hash."""
        sha256 = sha256.lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256 hex digest")
        return f"{self.root}/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def uri_for(self, sha256: str) -> str:
        return self.fs.unstrip_protocol(self.path_for(sha256))

    def _path_from_uri(self, uri: str) -> str:
        """The path of ``uri``, which must be a blob URI of *this* store."""
        path = self.fs._strip_protocol(uri)
        name = path.rsplit("/", 1)[-1]
        if self.path_for(name) != path:
            raise ValueError(f"not a blob of this store: {uri}")
        return path

    # --- operations ----------------------------------------------------------

    def put(self, data: bytes) -> tuple[str, str]:
        """Store ``data``; returns ``(sha256, uri)``. Storing existing content is a no-op."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.path_for(sha256)
        if not self.fs.exists(path):
            self._write_atomic(path, lambda fh: fh.write(data))
        return sha256, self.fs.unstrip_protocol(path)

    def put_stream(
        self, stream: IO[bytes] | BinaryIO, max_bytes: int | None = None
    ) -> tuple[str, str, int]:
        """Store a file-like object without holding it in memory; ``(sha256, uri, size)``.

        Raises ``ValueError`` (nothing stored) past ``max_bytes``.
        """
        self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)
        tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
        h = hashlib.sha256()
        size = 0
        try:
            with self.fs.open(tmp, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise ValueError(f"blob larger than {max_bytes} bytes")
                    h.update(chunk)
                    out.write(chunk)
            sha256 = h.hexdigest()
            path = self.path_for(sha256)
            if self.fs.exists(path):
                self.fs.rm(tmp)
            else:
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
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
        """Remove the blob; ``False`` if it was not there. Other tasks may share it:
        callers delete only when no task references the hash any more."""
        path = self._path_from_uri(uri)
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            return False
        return True

    def _write_atomic(self, path: str, write: object) -> None:
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        try:
            with self.fs.open(tmp, "wb") as fh:
                write(fh)  # type: ignore[operator]
            self.fs.mv(tmp, path)
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise


__all__ = ["BlobNotFound", "BlobStore"]
