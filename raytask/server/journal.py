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

Two stores: :class:`SQLiteStore` (WAL mode, one file on the head node; the default, at
``$RAYTASK_HOME/journal/<app>.db``) and :class:`RedisStore` (one hash per app, for
clusters that must survive the loss of the head node).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from ..core.config import AppConfig
from ..core.errors import ServiceUnavailableError
from ..core.table import TaskRecord

logger = logging.getLogger("ray.serve.raytask.journal")

Row = tuple[str, int, bytes, bytes | None]
"""``(task_id, seq, record, result)``: the record pickled, the result pickled or None."""


def encode_record(record: TaskRecord) -> bytes:
    """A record as journal bytes: its :meth:`~TaskRecord.to_dict`, pickled."""
    return pickle.dumps(record.to_dict(), protocol=pickle.HIGHEST_PROTOCOL)


def decode_record(data: bytes) -> TaskRecord:
    """The inverse of :func:`encode_record`."""
    return TaskRecord.from_dict(pickle.loads(data))


class Store(Protocol):
    """Where a journal's rows live. Methods block; the journal calls them in a thread."""

    def load(self) -> list[Row]: ...
    def commit(self, puts: list[Row], deletes: list[str]) -> None: ...
    def close(self) -> None: ...


class SQLiteStore:
    """Rows in one SQLite file (WAL mode: a commit survives the process being killed).

    Args:
        path: the database file; its directory is created.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit survives a crash of this process; only an OS crash or power
        # loss can take back the last commits (FULL would fsync each one).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS tasks ("
            "task_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, record BLOB NOT NULL, result BLOB)"
        )

    def __str__(self) -> str:
        return f"sqlite:{self.path}"

    def load(self) -> list[Row]:
        return list(self._db.execute("SELECT task_id, seq, record, result FROM tasks"))

    def commit(self, puts: list[Row], deletes: list[str]) -> None:
        with self._db:  # one transaction
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO tasks (task_id, seq, record, result) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(task_id) DO UPDATE SET record = excluded.record, "
                "result = coalesce(excluded.result, tasks.result)",
                puts,
            )
            self._db.executemany("DELETE FROM tasks WHERE task_id = ?", ((i,) for i in deletes))

    def close(self) -> None:
        self._db.close()


class RedisStore:
    """Rows in two Redis hashes per app: ``raytask:journal:<app>`` (records) and
    ``raytask:journal:<app>:results``.

    Args:
        url: ``redis://host:port/db``.
        app_name: the application (the hashes' names).
    """

    def __init__(self, url: str, app_name: str) -> None:
        try:
            import redis
        except ImportError:
            raise ImportError(
                'the Redis journal needs the redis package: pip install "raytask[redis]"'
            ) from None
        self.url = url
        self.key = f"raytask:journal:{app_name}"
        self._redis = redis.Redis.from_url(url, socket_timeout=10)

    def __str__(self) -> str:
        return f"{self.url} (hash {self.key})"

    def load(self) -> list[Row]:
        records = self._redis.hgetall(self.key)
        results = self._redis.hgetall(f"{self.key}:results")
        rows = []
        for value in records.values():
            task_id, seq, record = pickle.loads(value)
            rows.append((task_id, seq, record, results.get(task_id.encode())))
        return rows

    def commit(self, puts: list[Row], deletes: list[str]) -> None:
        with self._redis.pipeline(transaction=True) as pipe:  # MULTI ... EXEC
            if puts:
                rows = {row[0]: pickle.dumps(row[:3]) for row in puts}
                pipe.hset(self.key, mapping=rows)  # type: ignore[arg-type]
                results = {row[0]: row[3] for row in puts if row[3] is not None}
                if results:
                    pipe.hset(f"{self.key}:results", mapping=results)  # type: ignore[arg-type]
            if deletes:
                pipe.hdel(self.key, *deletes)
                pipe.hdel(f"{self.key}:results", *deletes)
            pipe.execute()

    def close(self) -> None:
        self._redis.close()


def open_store(config: AppConfig, app_name: str) -> Store | None:
    """The store ``config.journal`` names (None when the journal is ``off``)."""
    where = config.journal
    if where == "off":
        return None
    if where and where.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(where, app_name)
    if not where:
        home = Path(os.environ.get("RAYTASK_HOME") or "~/.raytask").expanduser()
        where = str(home / "journal" / f"{app_name}.db")
    return SQLiteStore(where.removeprefix("sqlite://"))


class Journal:
    """Group-committed writes of changed records to a :class:`Store`.

    Args:
        store: where the rows go.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._dirty: dict[str, TaskRecord | None] = {}  # None: forget the row
        self._results: dict[str, bytes] = {}
        self._writing: set[str] = set()
        self._batch = 1  # the number of the batch collecting changes now
        self._written = 0  # the last batch written
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0  # for stats and tests
        self.rows = 0

    # -- what the manager reports (all on its event loop) ---------------------------

    def changed(self, record: TaskRecord) -> None:
        self._dirty[record.task_id] = record
        self._start()

    def _start(self) -> None:
        """Start writing now if no write is on its way (one will pick this change up)."""
        if self._writer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a plain table in a sync test): flush() writes
                return
            self._writer = loop.create_task(self._write())

    def result(self, task_id: str, payload: bytes) -> None:
        """Journal a success's result with its task (call with the success's change)."""
        self._results[task_id] = payload

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
            while self._dirty:
                number, self._batch = self._batch, self._batch + 1
                batch, self._dirty = self._dirty, {}
                puts: list[Row] = []
                deletes: list[str] = []
                for task_id, record in batch.items():
                    if record is None:
                        deletes.append(task_id)
                    else:
                        result = self._results.pop(task_id, None)
                        puts.append((task_id, record.seq, encode_record(record), result))
                self._writing = set(batch)
                try:
                    await asyncio.to_thread(self.store.commit, puts, deletes)
                except Exception as exc:
                    logger.exception("raytask journal: a write of %d rows failed", len(batch))
                    for task_id, record in batch.items():  # retried with the next batch
                        self._dirty.setdefault(task_id, record)
                    for task_id, _, _, result in puts:
                        if result is not None:
                            self._results.setdefault(task_id, result)
                    self._settle(number, ServiceUnavailableError(f"the journal failed: {exc}"))
                    return
                finally:
                    self._writing = set()
                self.commits += 1
                self.rows += len(batch)
                self._written = number
                self._settle(number)
        finally:
            self._writer = None

    def _settle(self, number: int, error: Exception | None = None) -> None:
        for target in [t for t in self._waiters if t <= number or error is not None]:
            waiter = self._waiters.pop(target)
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)

    # -- reading back -----------------------------------------------------------------

    def load(self) -> tuple[list[TaskRecord], dict[str, bytes]]:
        """Every journaled record, and the journaled results by task id."""
        records, results = [], {}
        for task_id, _, record, result in self.store.load():
            try:
                records.append(decode_record(record))
            except Exception as exc:  # a row this version cannot read: say so, go on
                logger.error("raytask journal: cannot read task %s: %s", task_id, exc)
                continue
            if result is not None:
                results[task_id] = result
        return records, results

    def rewrite(self, records: Iterable[TaskRecord]) -> None:
        """Mark records as changed (recovery's decisions are written with the first
        batch)."""
        for record in records:
            self.changed(record)
