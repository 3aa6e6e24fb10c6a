"""Batch files on the task manager's disk: the ``/v1/files`` objects of SPEC §11.

Each file is two entries in one folder (``batch_dir``, by default
``$RAYTASK_HOME/files/<app>``): ``<id>.jsonl``, its bytes, and ``<id>.json``, its file
object (written last, by a rename, so a file without one is an upload that never ended and
is removed at the next start). The folder is the only record: no journal row is needed, so
files survive a manager restart, a new ``serve run`` and ``journal: off`` alike.

An upload arrives in pieces (:meth:`FileStore.open`, :meth:`FileStore.write`,
:meth:`FileStore.close`), so a 2 GiB file is never whole in memory; it lives on the node of
the manager (the head node), where the jobs read it.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.errors import InvalidInputError, NotFoundError, PayloadTooLargeError

FILE_ID = re.compile(r"file-[0-9a-f]{24}")
UPLOAD_IDLE_S = 600.0
"""An upload nothing wrote to this long is dropped (its ingress died mid-upload)."""
MAX_READ = 16 * 1024 * 1024
"""The most bytes one read returns (a download is many reads)."""


def new_id(prefix: str) -> str:
    """An unguessable id: ``prefix`` and 24 hex digits."""
    return prefix + uuid.uuid4().hex[:24]


@dataclass
class FileInfo:
    """A file object (``owner``, the token digest under isolation, is never sent)."""

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    owner: str | None = None

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",  # what OpenAI's file object still carries
        }


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: whole or not at all, even across a crash."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


class Upload:
    """A file being written: its bytes go to disk as they come."""

    def __init__(self, info: FileInfo, path: Path, limit: int, keep: int = 0) -> None:
        self.info, self.path, self.limit = info, path, limit
        self.touched = time.monotonic()  # its last write (an upload left idle is dropped)
        if keep:  # an output file a restarted job goes on with: what it had committed
            self._out = open(path, "r+b")
            self._out.truncate(keep)
            self._out.seek(keep)
        else:
            self._out = open(path, "wb")
        info.bytes = keep

    def write(self, data: bytes) -> None:
        if self.info.bytes + len(data) > self.limit:
            raise PayloadTooLargeError(
                f"the file is larger than this app's max_file_bytes={self.limit}"
            )
        self._out.write(data)
        self.info.bytes += len(data)
        self.touched = time.monotonic()

    def sync(self) -> None:
        """Make what was written durable."""
        self._out.flush()
        os.fsync(self._out.fileno())

    def close(self) -> None:
        self.sync()
        self._out.close()

    def release(self) -> None:
        """Close the file as it is (a stopped manager: a restart goes on from its commit)."""
        self._out.close()


class FileStore:
    """The files of one app, indexed in memory from their file objects on disk.

    Args:
        root: the folder (created if missing).
        max_file_bytes: the largest upload; more is 413.
        clock: epoch seconds.
    """

    def __init__(self, root: Path, max_file_bytes: int, clock: Any = time.time) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.clock = clock
        root.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, FileInfo] = {}
        self._uploads: dict[str, Upload] = {}
        for meta in root.glob("file-*.json"):
            try:
                info = FileInfo(**json.loads(meta.read_bytes()))
            except (ValueError, TypeError) as exc:  # a broken object: say so, keep going
                os.write(2, f"raytask: unreadable file object {meta}: {exc}\n".encode())
                continue
            self._files[info.id] = info

    def clean(self, keep: set[str]) -> None:
        """Remove the bytes of uploads that never ended (a crash cut them), but ``keep``'s
        (the output files unfinished jobs go on writing)."""
        for part in self.root.glob("file-*.jsonl"):
            if part.stem not in self._files and part.stem not in keep:
                part.unlink(missing_ok=True)

    def path(self, file_id: str) -> Path:
        return self.root / f"{file_id}.jsonl"

    # -- uploads ---------------------------------------------------------------

    def open(self, filename: str, purpose: str, owner: str | None = None) -> str:
        """Start an upload; returns its id (the file's id once it ends)."""
        if purpose != "batch":
            raise InvalidInputError(f"purpose must be 'batch', not {purpose[:64]!r}")
        info = FileInfo(new_id("file-"), 0, int(self.clock()), filename[:255], purpose, owner)
        self._uploads[info.id] = Upload(info, self.path(info.id), self.max_file_bytes)
        return info.id

    def output(self, info: FileInfo | None, filename: str, owner: str | None) -> Upload:
        """A job's output or error file to append to: a new one, or (``info``, after a
        restart) the one it had, cut to the ``info.bytes`` it had committed. Listed only
        once :meth:`publish` ends it."""
        if info is None:
            info = FileInfo(new_id("file-"), 0, int(self.clock()), filename, "batch_output", owner)
        return Upload(info, self.path(info.id), 2**62, keep=info.bytes)

    def _upload(self, upload_id: str) -> Upload:
        upload = self._uploads.get(upload_id)
        if upload is None:
            raise NotFoundError(f"no upload {upload_id[:64]!r} in progress")
        return upload

    def write(self, upload_id: str, data: bytes) -> None:
        """Append to an upload (413 past ``max_file_bytes``: the upload is dropped)."""
        upload = self._upload(upload_id)
        try:
            upload.write(data)
        except PayloadTooLargeError:
            self.abort(upload_id)
            raise

    def close(self, upload_id: str) -> FileInfo:
        """End an upload: its file object is written, and the file is listed."""
        upload = self._uploads.pop(upload_id, None) or self._upload(upload_id)
        upload.close()
        self.publish(upload.info)
        return upload.info

    def publish(self, info: FileInfo) -> None:
        """List a file whose bytes are on disk (its object written last)."""
        write_atomically(self.root / f"{info.id}.json", json.dumps(asdict(info)).encode())
        self._files[info.id] = info

    def drop_idle(self, idle_s: float = UPLOAD_IDLE_S) -> list[str]:
        """Abort the uploads nothing wrote to for ``idle_s`` (their ingress went away
        mid-upload); returns their ids."""
        now = time.monotonic()
        idle = [i for i, upload in self._uploads.items() if now - upload.touched > idle_s]
        for upload_id in idle:
            self.abort(upload_id)
        return idle

    def abort(self, upload_id: str) -> None:
        """Drop an upload and its bytes (a failed or cut request)."""
        upload = self._uploads.pop(upload_id, None)
        if upload is not None:
            upload._out.close()
            upload.path.unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------

    def get(self, file_id: str, owner: str | None = None) -> FileInfo:
        """A listed file (404 if unknown, or another owner's under isolation)."""
        info = self._files.get(file_id) if FILE_ID.fullmatch(file_id) else None
        if info is None or (owner is not None and info.owner != owner):
            raise NotFoundError(f"no file {file_id[:64]!r}")
        return info

    def list(self, owner: str | None = None, purpose: str | None = None) -> list[FileInfo]:
        """The listed files, newest first."""
        found = [
            f
            for f in self._files.values()
            if (owner is None or f.owner == owner) and (purpose is None or f.purpose == purpose)
        ]
        return sorted(found, key=lambda f: (f.created_at, f.id), reverse=True)

    def read(self, file_id: str, offset: int, size: int, owner: str | None = None) -> bytes:
        """Up to ``size`` bytes (at most :data:`MAX_READ`) of a file from ``offset`` (empty
        at its end)."""
        info = self.get(file_id, owner)
        size = min(size, MAX_READ)
        if offset >= info.bytes or size <= 0:
            return b""
        with open(self.path(file_id), "rb") as src:
            src.seek(offset)
            return src.read(min(size, info.bytes - offset))

    def delete(self, file_id: str, owner: str | None = None) -> None:
        """Forget a file and remove its bytes."""
        self.get(file_id, owner)
        (self.root / f"{file_id}.json").unlink(missing_ok=True)
        self.path(file_id).unlink(missing_ok=True)
        del self._files[file_id]
