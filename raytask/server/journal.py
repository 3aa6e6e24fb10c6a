"""The task manager's journal: every change a client was told of, durable before it is told.

A restarted Ray actor reruns its constructor with empty state, and its objects die with
it, so what must survive a manager crash is written here and read back at start (see
:mod:`raytask.core.recovery` for what each task then becomes).

:class:`Journal` batches writes (group commit): the table reports each changed record,
the first :meth:`Journal.flush` writes them in a thread off the event loop, and changes
made while that write is on its way go together in the next one. Every change starts a
write if none is on its way, so the journal trails the table by one write at most; a
submit's answer waits for the write that holds its task, and a status read of a task with
an unwritten change waits too, so no client sees a state a crash could take back.

Two stores (:mod:`raytask.server.stores`): one SQLite file on the head node (the default)
and Redis, for clusters that must survive the loss of the head node. A task's inputs are
written once, with its first row; later rows of it hold only its state (and a success's
result), so a state change costs a small row. A generator task's chunks go in groups
(:meth:`~raytask.core.chunks.ChunkLog.group`): a write holds those that came since the
one before, so a stream of ``n`` chunks costs ``O(n)`` journal bytes.

Trust: a row is unpickled only once its HMAC-SHA256 checks out under the journal's key
(``RAYTASK_JOURNAL_KEY``, else a random key in a ``0600`` file beside the journal, made
on first use), so whoever can write the journal's file or Redis cannot make the manager run
code. A row that fails the check is logged and left out, and its task ends in ``failure``
(see :func:`raytask.core.recovery.recover`). The SQLite journal's folder is made ``0700``
and its files ``0600``: they hold the tasks' inputs and results.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import pickle
import secrets
from collections.abc import Iterable
from pathlib import Path

from ray import cloudpickle  # the pickler alone (by value: the app's own classes)

from ..core.chunks import ChunkLog
from ..core.errors import ServiceUnavailableError
from ..core.status import TaskStatus
from ..core.table import TaskRecord
from ..core.usage import Usage, key_of
from .stores import (
    EMPTY_USAGE,
    KEY_ENV,
    Group,
    RedisStore,
    Row,
    SQLiteStore,
    Store,
    UsageChanges,
    open_store,
    private_folder,
    raytask_home,
    redact_url,
)

__all__ = [
    "INTEGRITY_FAILED",
    "KEY_ENV",
    "Journal",
    "RedisStore",
    "Row",
    "SQLiteStore",
    "Seal",
    "Store",
    "load_key",
    "open_store",
    "raytask_home",
    "redact_url",
    "result_payload",
]

logger = logging.getLogger("ray.serve.raytask.journal")

INTEGRITY_FAILED = "journal row failed its integrity check"
_TAG_BYTES = hashlib.sha256().digest_size


def encode_record(record: TaskRecord) -> bytes:
    """A record as unsealed journal bytes: its :meth:`~TaskRecord.to_dict` (no inputs),
    pickled."""
    return pickle.dumps(record.to_dict(), protocol=pickle.HIGHEST_PROTOCOL)


def encode_inputs(record: TaskRecord) -> bytes:
    """A task's inputs as unsealed journal bytes."""
    return pickle.dumps(record.kwargs, protocol=pickle.HIGHEST_PROTOCOL)


def decode_record(
    data: bytes, inputs: bytes | None = None, groups: Iterable[bytes] = ()
) -> TaskRecord:
    """The inverse of :func:`encode_record`, with the task's chunk groups (only for bytes
    whose seal checked out).

    Raises:
        ValueError: the chunk groups are not the ones the row counts.
    """
    kwargs = None if inputs is None else pickle.loads(inputs)
    fields = pickle.loads(data)
    record = TaskRecord.from_dict(fields, kwargs)
    record.inputs_journaled = inputs is not None
    if fields.get("chunk_count") is not None:
        attempt, count = fields["chunk_attempt"], fields["chunk_count"]
        log = ChunkLog.rebuild(groups) or ChunkLog(attempt)
        if (log.attempt, len(log)) != (attempt, count):
            raise ValueError(
                f"its chunk groups hold {len(log)} chunks of attempt {log.attempt}, "
                f"not {count} of attempt {attempt}"
            )
        record.chunks = log
    return record


def result_payload(record: TaskRecord, limit: int) -> bytes | None:
    """The pickle of a new success's small result (at most ``limit`` bytes), if the
    journal keeps it: a large one stays in the object store, one that cannot be pickled
    runs again if lost, and a generator's is its chunks, journaled in groups."""
    result = record.result
    if record.status is not TaskStatus.SUCCESS or result is None or not result.inline:
        return None
    if isinstance(result.value, ChunkLog):
        return None
    try:
        payload = cloudpickle.dumps(result.value)
    except Exception:
        return None
    return payload if len(payload) <= limit else None


def load_key(key_file: Path) -> bytes:
    """The journal's HMAC key: ``RAYTASK_JOURNAL_KEY`` if set, else the key in
    ``key_file``, made (32 random bytes, mode ``0600``) if there is none."""
    given = os.environ.get(KEY_ENV)
    if given:
        return given.encode()
    private_folder(key_file.parent)
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = key_file.read_bytes().strip()
        if key:
            return key
        # Made but never written (a crash in between): no row was sealed with it.
        fd = os.open(key_file, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    return key_file.read_bytes().strip()


class Seal:
    """HMAC-SHA256 tags on journal rows, bound to their task id and kind (a record's
    bytes cannot pass for another task's, nor for a result)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _tag(self, task_id: str, kind: bytes, payload: bytes) -> bytes:
        # hmac.digest: OpenSSL's one-shot HMAC, several times cheaper than an hmac object
        # (the journal seals every row of every change).
        message = b"".join((task_id.encode(), b"\0", kind, b"\0", payload))
        return hmac.digest(self._key, message, hashlib.sha256)

    def seal(self, task_id: str, kind: bytes, payload: bytes) -> bytes:
        return self._tag(task_id, kind, payload) + payload

    def open(self, task_id: str, kind: bytes, sealed: bytes) -> bytes | None:
        """The payload, or None if the tag does not check out."""
        tag, payload = sealed[:_TAG_BYTES], sealed[_TAG_BYTES:]
        if hmac.compare_digest(tag, self._tag(task_id, kind, payload)):
            return payload
        return None


class Journal:
    """Group-committed writes of changed records to a :class:`Store`.

    Args:
        store: where the rows go.
    """

    def __init__(self, store: Store, key: bytes | None = None) -> None:
        self.store = store
        self._seal = Seal(key or load_key(store.key_file))
        self._dirty: dict[str, TaskRecord | None] = {}  # None: forget the row
        self._results: dict[str, bytes] = {}
        self._writing: set[str] = set()
        self._batch = 1  # the number of the batch collecting changes now
        self._written = 0  # the last batch written
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._writer: asyncio.Task[None] | None = None
        self.usage: Usage | None = None  # its dirty rows go with each write
        self.commits = 0  # for stats, tests and benchmarks
        self.rows = 0
        self.bytes = 0

    # -- what the manager reports (all on its event loop) ---------------------------

    def changed(self, record: TaskRecord, result: bytes | None = None) -> None:
        """Journal ``record``'s change, and the pickle of its ``result`` with it (a
        success: the row that says it succeeded holds its result)."""
        self._dirty[record.task_id] = record
        if result is not None:
            self._results[record.task_id] = result
        self._start()

    def attach(self, usage: Usage) -> None:
        """Journal ``usage``'s rows: changed ones with each write, sealed."""
        self.usage = usage
        usage.on_dirty = self._start

    def _usage_changes(self) -> UsageChanges:
        if self.usage is None or not self.usage.dirty:
            return EMPTY_USAGE
        puts, deletes = self.usage.take_dirty()
        return [(key, self._seal.seal(key, b"usage", row)) for key, row in puts], deletes

    def _start(self) -> None:
        """Start writing now if no write is on its way (one will pick this change up)."""
        if self._writer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a plain table in a sync test): flush() writes
                return
            self._writer = loop.create_task(self._write())

    def forgotten(self, task_id: str) -> None:
        self._dirty[task_id] = None
        self._results.pop(task_id, None)
        self._start()

    def pending(self, task_id: str) -> bool:
        """Whether ``task_id`` has a change not written yet."""
        return task_id in self._dirty or task_id in self._writing

    # -- writing --------------------------------------------------------------------

    async def flush(self) -> None:
        """Return once every change reported before this call is written.

        Raises:
            ServiceUnavailableError: the store refused the write (it is retried with
                the next batch).
        """
        target = self._batch if self._dirty else self._batch - 1
        if self._written >= target:
            return
        if target not in self._waiters:
            self._waiters[target] = asyncio.get_running_loop().create_future()
        waiter = self._waiters[target]
        self._start()
        await asyncio.shield(waiter)

    async def _write(self) -> None:
        try:
            while self._dirty or (self.usage is not None and self.usage.dirty):
                number, self._batch = self._batch, self._batch + 1
                batch, self._dirty = self._dirty, {}
                puts: list[Row] = []
                deletes: list[str] = []
                groups: list[Group] = []
                logs: list[tuple[ChunkLog, int]] = []  # (log, journaled once written)
                results = {t: self._results.pop(t) for t in batch if t in self._results}
                for task_id, record in batch.items():
                    if record is None:
                        deletes.append(task_id)
                        continue
                    puts.append(self._row(record, results.get(task_id)))
                    log = record.chunks
                    if log is not None and log.unjournaled():  # the chunks since the last
                        first, end = max(log.journaled, 0), len(log)
                        groups.append(
                            (task_id, first, self._seal.seal(task_id, b"chunks", log.group(end)))
                        )
                        logs.append((log, end))
                self._writing = set(batch)
                usage = self._usage_changes()
                try:
                    await asyncio.to_thread(self.store.commit, puts, deletes, groups, usage)
                except Exception as exc:
                    logger.exception("raytask journal: a write of %d rows failed", len(batch))
                    if self.usage is not None:  # retried with the next batch, as it is then
                        self.usage.dirty.update(key_of(k) for k, _ in usage[0])
                        self.usage.dirty.update(key_of(k) for k in usage[1])
                    for task_id, record in batch.items():  # retried with the next batch
                        self._dirty.setdefault(task_id, record)
                    for task_id, result in results.items():
                        self._results.setdefault(task_id, result)
                    self._settle(number, ServiceUnavailableError(f"the journal failed: {exc}"))
                    return
                finally:
                    self._writing = set()
                for record in batch.values():
                    if record is not None:
                        record.inputs_journaled = True
                for log, end in logs:
                    log.journaled = end
                self.commits += 1
                self.rows += len(batch)
                self.bytes += sum(len(b) for row in puts for b in row[2:] if b is not None)
                self.bytes += sum(len(group[2]) for group in groups)
                self._written = number
                self._settle(number)
        finally:
            self._writer = None

    def _row(self, record: TaskRecord, result: bytes | None) -> Row:
        task_id, seal = record.task_id, self._seal.seal
        inputs = (
            None if record.inputs_journaled else seal(task_id, b"inputs", encode_inputs(record))
        )
        return (
            task_id,
            record.seq,
            seal(task_id, b"record", encode_record(record)),
            None if result is None else seal(task_id, b"result", result),
            inputs,
        )

    async def close(self, timeout_s: float = 10.0) -> None:
        """Close the store once the write on its way is done (closing it under a write in
        its thread would crash SQLite); a write that does not end in ``timeout_s`` keeps
        the store open."""
        writer = self._writer
        if writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(writer), timeout_s)
            except Exception:  # it timed out, or the write failed and is still owed
                logger.warning("raytask journal: a write did not end; the store stays open")
                return
        self.store.close()

    def _settle(self, number: int, error: Exception | None = None) -> None:
        for target in [t for t in self._waiters if t <= number or error is not None]:
            waiter = self._waiters.pop(target)
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)

    # -- reading back -----------------------------------------------------------------

    def load(self) -> tuple[list[TaskRecord], dict[str, bytes], dict[str, str]]:
        """Every journaled record, the journaled results by task id, and why each row
        that cannot be read was left out, by task id (a row whose seal does not check
        out is never unpickled)."""
        records, results, broken = [], {}, {}
        all_groups = self.store.load_groups()
        for task_id, _, sealed, sealed_result, sealed_inputs in self.store.load():
            record = self._seal.open(task_id, b"record", sealed)
            inputs = None
            if sealed_inputs is not None:
                inputs = self._seal.open(task_id, b"inputs", sealed_inputs)
            groups = [self._seal.open(task_id, b"chunks", g) for g in all_groups.get(task_id, ())]
            if (
                record is None
                or (sealed_inputs is not None and inputs is None)
                or any(group is None for group in groups)
            ):
                logger.error("raytask journal: task %s: %s", task_id, INTEGRITY_FAILED)
                broken[task_id] = INTEGRITY_FAILED
                continue
            try:
                records.append(decode_record(record, inputs, groups))  # type: ignore[arg-type]
            except Exception as exc:  # a row this version cannot read: say so, go on
                logger.error("raytask journal: cannot read task %s: %s", task_id, exc)
                broken[task_id] = f"its journal row cannot be read: {type(exc).__name__}"
                continue
            if sealed_result is not None:
                result = self._seal.open(task_id, b"result", sealed_result)
                if result is None:
                    logger.error("raytask journal: result of %s: %s", task_id, INTEGRITY_FAILED)
                else:
                    results[task_id] = result
        return records, results, broken

    def load_usage(self) -> list[tuple[str, bytes]]:
        """The journaled usage rows whose seal checks out (others are logged, left out)."""
        rows = []
        for key, sealed in self.store.load_usage():
            row = self._seal.open(key, b"usage", sealed)
            if row is None:
                logger.error("raytask journal: usage row %r: %s", key, INTEGRITY_FAILED)
            else:
                rows.append((key, row))
        return rows

    def rewrite(self, records: Iterable[TaskRecord]) -> None:
        """Mark records as changed (recovery's decisions are written with the first
        batch)."""
        for record in records:
            self.changed(record)
