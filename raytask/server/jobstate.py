"""A batch job's state (SPEC §11): its batch object, and its progress on disk.

A job keeps two files in ``batch_dir/batches/``:

- ``<id>.json``: the batch object (:class:`Job`), replaced atomically at each status change;
- ``<id>.progress``: what has finished (:func:`commit`): the committed sizes of its output
  and error files, its counts, the first line not finished, then a bitmap of the finished
  lines (one bit a line), in one file replaced atomically after the output files are synced.

:func:`open_run` reads them back: the output files are cut to their committed sizes, and
the lines the bitmap holds are never fed again. A line finished after the last commit is in
neither, so it runs again and is written once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..core.errors import InvalidInputError
from ..core.queue import ANONYMOUS
from ..core.record import TaskRecord
from .files import FileInfo, FileStore, Upload, write_atomically
from .joblines import lines

FINISHED = ("failed", "completed", "expired", "cancelled")
_WINDOW = re.compile(r"([0-9]{1,6})([hms])")
_UNIT_S = {"h": 3600, "m": 60, "s": 1}
MAX_WINDOW_S = 168 * 3600
_HEADER = struct.Struct("<6Q")  # output bytes, error bytes, completed, failed, resume line, offset


def window_s(completion_window: str) -> int:
    """The seconds of a ``completion_window``: ``<n>h`` with n from 1 to 168 (SPEC), or, as
    raytask also takes for short jobs, ``<n>m`` or ``<n>s`` up to as long."""
    match = _WINDOW.fullmatch(completion_window)
    seconds = 0 if match is None else int(match.group(1)) * _UNIT_S[match.group(2)]
    if not 1 <= seconds <= MAX_WINDOW_S:
        raise InvalidInputError(
            f"completion_window must be '<n>h' with n from 1 to 168 (like '24h'), or as "
            f"long in minutes or seconds ('90m', '30s'), not {completion_window[:32]!r}"
        )
    return seconds


@dataclass
class Job:
    """A batch job: its batch object (SPEC §11) and what the manager needs to go on."""

    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    created_at: int
    expires_at: int
    priority: int = -1
    metadata: dict[str, str] | None = None
    owner: str | None = None
    tenant: str = ANONYMOUS  # its lines' tenant (quotas, fair share, usage)
    status: str = "validating"
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: list[dict[str, Any]] | None = None
    output: dict[str, Any] | None = None  # the output file's FileInfo while it is written
    error: dict[str, Any] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }


class Run:
    """A running job's state in memory: its place in the input, its lines in the table,
    its output files and the bitmap of finished lines."""

    def __init__(self, src: BinaryIO, out: Upload, err: Upload, done: bytearray) -> None:
        self.src, self.out, self.err, self.done = src, out, err, done
        self.feed: Iterator[tuple[int, int, bytes]] | None = None
        self.held: tuple[int, int, bytes] | None = None  # a line the full queue refused
        self.eof = False
        self.inflight: dict[str, tuple[int, int, str]] = {}  # task id -> line, offset, id
        self.finished: list[TaskRecord] = []
        self.wake = asyncio.Event()
        self.stopping: str | None = None  # batch_cancelled or batch_expired
        self.options: tuple[Any, Any] | None = None  # (the route's, the lines') task options
        self.resume = (1, 0)  # the first line not finished when it was read (line, offset)

    def is_done(self, number: int) -> bool:
        index = number >> 3
        return index < len(self.done) and bool(self.done[index] & (1 << (number & 7)))

    def mark(self, number: int) -> None:
        index = number >> 3
        if index >= len(self.done):  # line numbers count blank lines too
            self.done.extend(bytes(index + 1 - len(self.done)))
        self.done[index] |= 1 << (number & 7)

    def first_open(self) -> tuple[int, int]:
        """The first line that may not be finished: where a restart reads from."""
        if self.inflight:
            number, offset, _ = min(self.inflight.values())
            return number, offset
        if self.held is not None:
            return self.held[0], self.held[1]
        return self.resume


def save(job: Job, folder: Path) -> None:
    """Write the batch object (atomically)."""
    write_atomically(folder / f"{job.id}.json", json.dumps(dataclasses.asdict(job)).encode())


def open_run(job: Job, files: FileStore, folder: Path) -> Run:
    """The run of a job starting, or going on after a restart from its last commit."""
    header, done = (0, 0, 0, 0, 1, 0), bytearray(job.total // 8 + 1)
    progress = folder / f"{job.id}.progress"
    if job.output is not None and progress.exists():
        data = progress.read_bytes()
        header, done = _HEADER.unpack_from(data), bytearray(data[_HEADER.size :])
    out_bytes, err_bytes, job.completed, job.failed, line, offset = header
    outputs = []
    for kept, info, name in ((out_bytes, job.output, "output"), (err_bytes, job.error, "errors")):
        if info is not None:  # cut back to what the last commit counted
            info = FileInfo(**{**info, "bytes": kept})
        outputs.append(files.output(info, f"{job.id}_{name}.jsonl", job.owner))
    job.output, job.error = (dataclasses.asdict(o.info) for o in outputs)
    save(job, folder)
    src = open(files.path(job.input_file_id), "rb")
    src.seek(offset)
    run = Run(src, outputs[0], outputs[1], done)
    run.resume = (line, offset)
    run.feed = lines(src, line)
    return run


def commit(job: Job, run: Run, folder: Path) -> None:
    """Make the run's progress durable: the output files first, then the progress file."""
    run.out.sync()
    run.err.sync()
    line, offset = run.first_open()
    header = _HEADER.pack(
        run.out.info.bytes, run.err.info.bytes, job.completed, job.failed, line, offset
    )
    write_atomically(folder / f"{job.id}.progress", header + run.done)
