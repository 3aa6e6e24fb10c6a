"""The journal: its two encodings, the SQLite store, and group commit."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from raytask.core.config import AppConfig, TaskOptions
from raytask.core.errors import ServiceUnavailableError
from raytask.core.table import TaskTable
from raytask.server.journal import (
    Journal,
    Row,
    SQLiteStore,
    decode_record,
    encode_inputs,
    encode_record,
    open_store,
)

from ..support import FakeClock

KEY = b"k" * 32


def test_a_record_survives_encoding(clock: FakeClock) -> None:
    table = TaskTable(clock=clock)
    record = table.submit("e", {"text": "x", "n": [1, 2]}, TaskOptions(ttl_s=5, max_attempts=2))
    table.pop_next("e")
    table.fail(record.task_id, "boom", retryable=True)
    assert decode_record(encode_record(record), encode_inputs(record)) == record


def test_the_sqlite_store_upserts_keeps_results_and_deletes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "deep" / "j.db")
    store.commit([("a", 1, b"r1", None, b"in-a"), ("b", 2, b"r2", b"result", b"in-b")], [])
    # No result and no inputs: both kept.
    store.commit([("a", 1, b"r1-new", None, None), ("b", 2, b"r2-new", None, None)], [])
    assert sorted(store.load()) == [
        ("a", 1, b"r1-new", None, b"in-a"),
        ("b", 2, b"r2-new", b"result", b"in-b"),
    ]
    store.commit([], ["a"])
    store.close()
    reopened = SQLiteStore(tmp_path / "deep" / "j.db")  # what a restarted manager reads
    assert reopened.load() == [("b", 2, b"r2-new", b"result", b"in-b")]


def test_the_default_journal_is_under_raytask_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYTASK_HOME", str(tmp_path / "home"))
    store = open_store(AppConfig(), "my-app")
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "home" / "journal" / "my-app.db"
    assert open_store(AppConfig(journal="off"), "my-app") is None
    path = tmp_path / "elsewhere.db"
    assert open_store(AppConfig(journal=str(path)), "x").path == path  # type: ignore[union-attr]


class SlowStore:
    """A store whose commits wait until the test lets them through."""

    def __init__(self) -> None:
        self.key_file = Path(tempfile.mkdtemp(prefix="raytask-test-key-")) / "j.key"
        self.commits: list[list[str]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()  # a commit is waiting at the gate
        self.fail = False

    def load(self) -> list[Row]:
        return []

    def load_groups(self) -> dict[str, list[bytes]]:
        return {}

    def load_usage(self) -> list[tuple[str, bytes]]:
        return []

    def commit(
        self, puts: list[Row], deletes: list[str], groups: Any = (), usage: Any = ([], [])
    ) -> None:
        self.entered.set()
        self.gate.wait(10)
        if self.fail:
            raise OSError("disk full")
        self.commits.append([row[0] for row in puts] + [f"-{d}" for d in deletes])

    def close(self) -> None:
        pass


async def test_changes_made_during_a_write_go_together_in_the_next(clock: FakeClock) -> None:
    store = SlowStore()
    journal = Journal(store, key=KEY)
    table = TaskTable(clock=clock)
    table.on_change = journal.changed
    first = table.submit("e", {}, TaskOptions())
    waiting_first = asyncio.ensure_future(journal.flush())
    await asyncio.to_thread(store.entered.wait, 10)  # the first write is held at the gate
    later = [table.submit("e", {}, TaskOptions()) for _ in range(3)]
    assert journal.pending(first.task_id) and all(journal.pending(r.task_id) for r in later)
    waiting_later = [asyncio.ensure_future(journal.flush()) for _ in range(3)]
    await asyncio.sleep(0)  # every flush has started waiting
    assert not waiting_first.done() and not any(w.done() for w in waiting_later)
    store.gate.set()
    await asyncio.gather(waiting_first, *waiting_later)
    assert store.commits == [[first.task_id], [r.task_id for r in later]]  # two commits
    assert not any(journal.pending(r.task_id) for r in [first, *later])
    await journal.flush()  # nothing left: returns at once
    assert len(store.commits) == 2


async def test_a_failed_write_is_an_error_for_its_waiters_and_is_retried(
    clock: FakeClock,
) -> None:
    store = SlowStore()
    store.gate.set()
    store.fail = True
    journal = Journal(store, key=KEY)
    table = TaskTable(clock=clock)
    table.on_change = journal.changed
    record = table.submit("e", {}, TaskOptions())
    with pytest.raises(ServiceUnavailableError, match="disk full"):
        await journal.flush()
    assert journal.pending(record.task_id)
    store.fail = False
    await journal.flush()
    assert store.commits == [[record.task_id]]


async def test_the_sweep_deletes_rows(tmp_path: Path, clock: FakeClock) -> None:
    store = SQLiteStore(tmp_path / "j.db")
    journal = Journal(store, key=KEY)
    table = TaskTable(clock=clock)
    table.on_change, table.on_forget = journal.changed, journal.forgotten
    record = table.submit("e", {}, TaskOptions(ttl_s=1))
    table.pop_next("e")
    table.succeed(record.task_id)
    journal.changed(record, b"small result")
    await journal.flush()
    assert [(row[0], row[3][32:]) for row in store.load()] == [(record.task_id, b"small result")]
    clock.advance(2)
    assert table.sweep() == [record.task_id]
    await journal.flush()
    assert store.load() == []


def test_the_journal_key_is_made_once_private_and_never_empty(tmp_path: Path) -> None:
    from raytask.server.journal import load_key

    key_file = tmp_path / "journal" / "j.db.key"
    key = load_key(key_file)
    assert len(key) == 64 and load_key(key_file) == key  # made once, then read
    assert key_file.stat().st_mode & 0o777 == 0o600
    key_file.write_bytes(b"")  # made, then the process died before writing it
    again = load_key(key_file)
    assert len(again) == 64 and again != key


class RowStore(SlowStore):
    """A store that keeps every row it was given (the gate open)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[Row] = []
        self.gate.set()

    def commit(
        self, puts: list[Row], deletes: list[str], groups: Any = (), usage: Any = ([], [])
    ) -> None:
        super().commit(puts, deletes)
        self.rows.extend(puts)


async def test_a_tasks_inputs_are_written_once_with_its_first_row(clock: FakeClock) -> None:
    store = RowStore()
    journal = Journal(store, key=KEY)
    table = TaskTable(clock=clock)
    table.on_change = journal.changed
    record = table.submit("e", {"text": "x" * 1000}, TaskOptions())
    await journal.flush()
    table.pop_next("e")
    await journal.flush()
    table.succeed(record.task_id)
    await journal.flush()
    inputs = [row[4] for row in store.rows]
    assert inputs[0] is not None and inputs[1:] == [None, None]
    assert all(len(row[2]) < 1000 for row in store.rows)  # the state rows stay small
    # what a restart reads: the inputs come back with the record
    reopened = Journal(SQLiteStoreOf(store.rows), key=KEY)
    (loaded,), _, broken = reopened.load()
    assert loaded.kwargs == {"text": "x" * 1000} and loaded.inputs_journaled and not broken


async def test_inputs_of_a_failed_write_go_with_the_next(clock: FakeClock) -> None:
    store = RowStore()
    store.fail = True
    journal = Journal(store, key=KEY)
    table = TaskTable(clock=clock)
    table.on_change = journal.changed
    table.submit("e", {"n": 1}, TaskOptions())
    with pytest.raises(ServiceUnavailableError):
        await journal.flush()
    store.fail = False
    await journal.flush()
    assert [row[4] is not None for row in store.rows] == [True]


class SQLiteStoreOf:
    """The rows given, as a store to load (the last row of a task wins; inputs stay)."""

    def __init__(self, rows: list[Row]) -> None:
        self.key_file = Path(tempfile.mkdtemp(prefix="raytask-test-key-")) / "j.key"
        merged: dict[str, Row] = {}
        for row in rows:
            before = merged.get(row[0])
            inputs = row[4] if row[4] is not None else (before[4] if before else None)
            result = row[3] if row[3] is not None else (before[3] if before else None)
            merged[row[0]] = (row[0], row[1], row[2], result, inputs)
        self.rows = list(merged.values())

    def load(self) -> list[Row]:
        return self.rows

    def load_groups(self) -> dict[str, list[bytes]]:
        return {}
