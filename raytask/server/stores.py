"""Where a task manager's journal lives: one SQLite file, or Redis hashes.

:class:`SQLiteStore` (WAL mode, one file on the head node; the default, at
``$RAYTASK_HOME/journal/<app>.db``) and :class:`RedisStore` (one hash per app and column,
for clusters that must survive the loss of the head node). Their methods block; the
:class:`~raytask.server.journal.Journal` calls them in a thread, with rows it sealed.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from ..core.config import AppConfig

logger = logging.getLogger("ray.serve.raytask.journal")

Row = tuple[str, int, bytes, bytes | None, bytes | None]
"""``(task_id, seq, record, result, inputs)``: the record, the result and the inputs as
sealed bytes (an HMAC tag, then the pickle); None for a result or inputs this write does
not change (a task's inputs are written once, with its first row)."""

Group = tuple[str, int, bytes]
"""``(task_id, first, chunks)``: a group of a generator task's chunks, sealed, and the index
of its first chunk; the group with ``first`` 0 replaces the task's earlier ones (a new
attempt streams)."""

UsageChanges = tuple[list[tuple[str, bytes]], list[str]]
"""``(puts, deletes)`` of usage rows (:mod:`raytask.core.usage`): ``(key, sealed row)``
written, and keys dropped (past 400 days); committed with the task rows that finished
those tasks."""
EMPTY_USAGE: UsageChanges = ([], [])

KEY_ENV = "RAYTASK_JOURNAL_KEY"


def private_folder(folder: Path) -> None:
    """Make ``folder`` (and its missing parents) with mode ``0700``."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for made in missing:
        os.chmod(made, 0o700)  # mkdir's mode is cut by the umask


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode ``0600`` if it does not exist."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def redact_url(url: str) -> str:
    """``url`` without its password (``redis://user:***@host``, ``?password=***``): fit
    for logs and stats."""
    parts = urlsplit(url)
    if parts.password is not None:
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}")
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit(parts._replace(query=query))


class Store(Protocol):
    """Where a journal's rows live. Methods block; the journal calls them in a thread."""

    key_file: Path  # where the journal's key lives without RAYTASK_JOURNAL_KEY

    def load(self) -> list[Row]: ...
    def load_groups(self) -> dict[str, list[bytes]]: ...  # by task, in order
    def load_usage(self) -> list[tuple[str, bytes]]: ...  # (key, sealed row)
    def commit(
        self,
        puts: list[Row],
        deletes: list[str],
        groups: Sequence[Group] = (),
        usage: UsageChanges = EMPTY_USAGE,
    ) -> None: ...
    def close(self) -> None: ...


class SQLiteStore:
    """Rows in one SQLite file (WAL mode: a commit survives the process being killed).

    Args:
        path: the database file; its directory is created.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.key_file = self.path.with_name(self.path.name + ".key")
        private_folder(self.path.parent)
        private_file(self.path)  # SQLite gives its -wal and -shm files the same mode
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit survives a crash of this process; only an OS crash or power
        # loss can take back the last commits (FULL would fsync each one).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, "
            "record BLOB NOT NULL, result BLOB, inputs BLOB)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS chunks (task_id TEXT NOT NULL, first INTEGER NOT NULL, "
            "chunks BLOB NOT NULL, PRIMARY KEY (task_id, first))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS usage (key TEXT PRIMARY KEY, row BLOB NOT NULL)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
        if "inputs" not in columns:  # a journal of an older version: its rows hold them
            self._db.execute("ALTER TABLE tasks ADD COLUMN inputs BLOB")

    def __str__(self) -> str:
        return f"sqlite:{self.path}"

    def load(self) -> list[Row]:
        return list(self._db.execute("SELECT task_id, seq, record, result, inputs FROM tasks"))

    def load_groups(self) -> dict[str, list[bytes]]:
        groups: dict[str, list[bytes]] = {}
        for task_id, chunks in self._db.execute(
            "SELECT task_id, chunks FROM chunks ORDER BY task_id, first"
        ):
            groups.setdefault(task_id, []).append(chunks)
        return groups

    def load_usage(self) -> list[tuple[str, bytes]]:
        return list(self._db.execute("SELECT key, row FROM usage"))

    def commit(
        self,
        puts: list[Row],
        deletes: list[str],
        groups: Sequence[Group] = (),
        usage: UsageChanges = EMPTY_USAGE,
    ) -> None:
        with self._db:  # one transaction
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO tasks (task_id, seq, record, result, inputs) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(task_id) DO UPDATE SET record = excluded.record, "
                "result = coalesce(excluded.result, tasks.result), "
                "inputs = coalesce(excluded.inputs, tasks.inputs)",
                puts,
            )
            gone = [(g[0],) for g in groups if g[1] == 0] + [(i,) for i in deletes]
            self._db.executemany("DELETE FROM chunks WHERE task_id = ?", gone)
            self._db.executemany("INSERT INTO chunks VALUES (?, ?, ?)", groups)
            self._db.executemany("DELETE FROM tasks WHERE task_id = ?", ((i,) for i in deletes))
            self._db.executemany("INSERT OR REPLACE INTO usage VALUES (?, ?)", usage[0])
            self._db.executemany("DELETE FROM usage WHERE key = ?", ((k,) for k in usage[1]))

    def close(self) -> None:
        self._db.close()


class RedisStore:
    """Rows in three Redis hashes per app: ``raytask:journal:<app>`` (records),
    ``raytask:journal:<app>:results`` and ``raytask:journal:<app>:inputs``; a generator
    task's chunk groups in a list per task, ``raytask:journal:<app>:chunks:<task_id>``.

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
        self._url = url
        self.key = f"raytask:journal:{app_name}"
        # The key must outlive the head node with the rows: set RAYTASK_JOURNAL_KEY on
        # clusters that count on that.
        self.key_file = raytask_home() / "journal" / f"{app_name}.redis.key"
        if not os.environ.get(KEY_ENV):
            logger.warning(
                "raytask journal: %s has no RAYTASK_JOURNAL_KEY; its key is %s on this node, "
                "so the rows cannot be read after this node is lost",
                self,
                self.key_file,
            )
        self._redis = redis.Redis.from_url(url, socket_timeout=10)

    def __str__(self) -> str:
        return f"{redact_url(self._url)} (hash {self.key})"

    def load(self) -> list[Row]:
        records = self._redis.hgetall(self.key)
        results = self._redis.hgetall(f"{self.key}:results")
        inputs = self._redis.hgetall(f"{self.key}:inputs")
        return [
            (
                task_id.decode(),
                int.from_bytes(value[:8]),
                value[8:],
                results.get(task_id),
                inputs.get(task_id),
            )
            for task_id, value in records.items()
        ]

    def load_groups(self) -> dict[str, list[bytes]]:
        prefix = f"{self.key}:chunks:"
        keys = list(self._redis.scan_iter(match=f"{prefix}*", count=1000))
        with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.lrange(key, 0, -1)
            lists = pipe.execute()
        return {
            key.decode().removeprefix(prefix): groups
            for key, groups in zip(keys, lists, strict=True)
        }

    def load_usage(self) -> list[tuple[str, bytes]]:
        rows = self._redis.hgetall(f"{self.key}:usage")
        return [(key.decode(), value) for key, value in rows.items()]

    def commit(
        self,
        puts: list[Row],
        deletes: list[str],
        groups: Sequence[Group] = (),
        usage: UsageChanges = EMPTY_USAGE,
    ) -> None:
        with self._redis.pipeline(transaction=True) as pipe:  # MULTI ... EXEC
            for task_id, first, chunks in groups:
                if first == 0:
                    pipe.delete(f"{self.key}:chunks:{task_id}")
                pipe.rpush(f"{self.key}:chunks:{task_id}", chunks)
            if puts:
                # The field is the task id, the value its seq (8 bytes) and record: no
                # pickle, so a loaded value runs nothing before its seal is checked.
                rows = {row[0]: row[1].to_bytes(8) + row[2] for row in puts}
                pipe.hset(self.key, mapping=rows)  # type: ignore[arg-type]
                for column, suffix in ((3, ":results"), (4, ":inputs")):
                    values = {row[0]: row[column] for row in puts if row[column] is not None}
                    if values:
                        pipe.hset(f"{self.key}{suffix}", mapping=values)  # type: ignore[arg-type]
            if deletes:
                for suffix in ("", ":results", ":inputs"):
                    pipe.hdel(f"{self.key}{suffix}", *deletes)
                pipe.delete(*(f"{self.key}:chunks:{task_id}" for task_id in deletes))
            if usage[0]:
                pipe.hset(f"{self.key}:usage", mapping=dict(usage[0]))  # type: ignore[arg-type]
            if usage[1]:
                pipe.hdel(f"{self.key}:usage", *usage[1])
            pipe.execute()

    def close(self) -> None:
        self._redis.close()


def raytask_home() -> Path:
    """``$RAYTASK_HOME``, by default ``~/.raytask``."""
    return Path(os.environ.get("RAYTASK_HOME") or "~/.raytask").expanduser()


def open_store(config: AppConfig, app_name: str) -> Store | None:
    """The store ``config.journal`` names (None when the journal is ``off``)."""
    where = config.journal
    if where == "off":
        return None
    if where and where.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(where, app_name)
    if not where:
        where = str(raytask_home() / "journal" / f"{app_name}.db")
    return SQLiteStore(where.removeprefix("sqlite://"))
