"""An ingress replica's copy of task states, fed by the manager's change feed.

:class:`StateCopy` applies the groups of :class:`~raytask.core.feed.ChangeFeed` and answers
what it can: the status of a running or finished task, a success's small result, and
whether a task a long-poll waits on has finished. It answers None when it cannot, and the
caller asks the manager:

- past its lease (see :mod:`raytask.core.feed`): the manager may have dropped it;
- a task it does not hold (submitted before the copy started, a batch job's line, or not
  yet in a group);
- a pending task: its queue position lives in the manager and moves with every start;
- a finished task past its ``expires_at`` (the manager answers "expired");
- a task the manager answered directly since the copy's last group was asked for: a group
  on its way may hold an older state of it than the one the caller has just seen.

A running task's ``run_s`` and ``gpu_s`` grow from the group's time, as the manager's own
answer would. A streaming task's chunks come in the groups too (each once), so a stream
reader of a running or finished task waits on the copy and reads its chunks from it; a
reader from a chunk the copy never got (it started following the task mid-stream) asks
the manager. Plain asyncio and no Ray.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .feed import LEASE_S, Chunks, Entry, Group
from .messages import StreamRead, news_for, stream_read
from .state import TaskState
from .status import TaskStatus
from .waits import Waits

MAX_ENTRIES = 200_000
MAX_RESULT_BYTES = 64 * 2**20
"""What one copy holds at most: past either, its least recently changed tasks are dropped
(their reads go to the manager)."""
_RUN_S = tuple(TaskState.model_fields).index("run_s")


class _Stream:
    """The chunks of one attempt a copy holds: ``data`` are chunks ``base`` on, of the
    attempt's ``len()`` (a :class:`~raytask.core.messages.Chunked`)."""

    __slots__ = ("attempt", "base", "data")

    def __init__(self, attempt: int, base: int) -> None:
        self.attempt, self.base = attempt, base
        self.data: list[bytes] = []

    def __len__(self) -> int:
        return self.base + len(self.data)

    def slice(self, start: int, end: int) -> list[bytes]:
        return self.data[start - self.base : end - self.base]


class StateCopy:
    """The task states one ingress replica holds.

    Args:
        clock: monotonic seconds (the lease).
        wall: epoch seconds (running tasks' seconds, expiry), as the manager's clock.
        lease_s: how long it trusts itself after sending its last answered poll.
        max_entries, max_result_bytes: what it holds at most (see :data:`MAX_ENTRIES`).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        lease_s: float = LEASE_S,
        max_entries: int = MAX_ENTRIES,
        max_result_bytes: int = MAX_RESULT_BYTES,
    ) -> None:
        self._clock, self._wall, self.lease_s = clock, wall, lease_s
        self.max_entries, self.max_result_bytes = max_entries, max_result_bytes
        self.result_bytes = 0
        self.epoch: str | None = None
        self.version = 0
        self._entries: dict[str, Entry] = {}
        self._streams: dict[str, _Stream] = {}  # streaming tasks' chunks
        self._trusted_until = float("-inf")
        self._sent = 0  # polls sent so far
        self._applied = 0  # the number of the latest poll whose group is applied
        self._fenced: dict[str, int] = {}  # task id -> the poll whose group may be used
        self._waiters = Waits()  # long-polls waiting for a task to finish

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def current(self) -> bool:
        """Within its lease: it may answer."""
        return self._clock() < self._trusted_until

    # -- following the feed ---------------------------------------------------------

    def sent(self) -> tuple[int, float]:
        """Note a poll on its way: its number and when it was sent (for :meth:`apply`)."""
        self._sent += 1
        return self._sent, self._clock()

    def apply(self, group: Group, poll: tuple[int, float]) -> None:
        """Take the answer of poll ``poll`` (from :meth:`sent`)."""
        number, sent_at = poll
        if group.reset or group.epoch != self.epoch:
            self._entries.clear()
            self._streams.clear()
            self._fenced.clear()
            self.epoch, self.result_bytes = group.epoch, 0
        for task_id, entry in group.entries.items():
            if entry is None:
                self._drop(task_id)
                continue
            self._drop_entry(task_id)
            self._take(task_id, entry.chunks)
            # (at the end: the oldest change is dropped first)
            self._entries[task_id] = entry if entry.chunks is None else entry._replace(chunks=None)
            self.result_bytes += entry.result[1] if entry.result else 0
        while self._entries and (
            len(self._entries) > self.max_entries or self.result_bytes > self.max_result_bytes
        ):
            self._drop(next(iter(self._entries)))
        self.version = group.version
        self._applied = number
        self._trusted_until = sent_at + self.lease_s
        if len(self._fenced) > 4096:
            self._fenced = {t: n for t, n in self._fenced.items() if n > number}
        if group.reset:
            self._waiters.wake_all()
        self._wake(group.entries)

    def _drop(self, task_id: str) -> None:
        self._drop_entry(task_id)
        self._drop_stream(task_id)

    def _drop_entry(self, task_id: str) -> None:
        entry = self._entries.pop(task_id, None)
        if entry is not None and entry.result is not None:
            self.result_bytes -= entry.result[1]

    def _drop_stream(self, task_id: str) -> None:
        stream = self._streams.pop(task_id, None)
        if stream is not None:
            self.result_bytes -= sum(map(len, stream.data))

    def _take(self, task_id: str, chunks: Chunks | None) -> None:
        """Add a group's chunks of a task to those the copy holds (a new attempt's, or
        ones that do not follow them, replace them)."""
        stream = self._streams.get(task_id)
        if (
            chunks is None
            or stream is None
            or stream.attempt != chunks.attempt
            or not (stream.base <= chunks.first <= len(stream))
        ):
            self._drop_stream(task_id)
            if chunks is None:
                return
            stream = self._streams[task_id] = _Stream(chunks.attempt, chunks.first)
        new = chunks.data[len(stream) - chunks.first :]  # (a resend overlaps what it holds)
        stream.data += new
        self.result_bytes += sum(map(len, new))

    def lost(self) -> None:
        """A poll failed (the manager is down or restarting): trust nothing until one
        gets through, and let waiters ask the manager."""
        self._trusted_until = float("-inf")
        self._waiters.wake_all()

    async def follow(
        self,
        poll: Callable[[str | None, int], Awaitable[Group]],
        retry_s: float = 0.2,
    ) -> None:
        """Poll and apply forever (``poll(epoch, since)``); a failed poll is retried after
        ``retry_s`` (the copy is :meth:`lost` meanwhile)."""
        while True:
            sent = self.sent()
            try:
                group = await poll(self.epoch, self.version)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.lost()
                await asyncio.sleep(retry_s)
                continue
            self.apply(group, sent)

    # -- answering ------------------------------------------------------------------

    def held(self, task_id: str, fenced: bool = True) -> Entry | None:
        """The entry of a task, if the copy may answer for it in any status (``fenced``:
        and not only from a group older than a direct answer, see :meth:`answered`)."""
        entry = self._entries.get(task_id)
        if entry is None or not self.current:
            return None
        fence = self._fenced.get(task_id) if fenced else None
        if fence is not None:
            if fence > self._applied:
                return None
            del self._fenced[task_id]
        state = entry.state
        if state.status.finished and (state.expires_at or 0.0) <= self._wall():
            return None
        return entry

    def state(self, task_id: str) -> TaskState | None:
        """The status answer of a running or finished task, or None (ask the manager)."""
        return self._state(self.held(task_id))

    def _state(self, entry: Entry | None) -> TaskState | None:
        if entry is None or entry.state.status is TaskStatus.PENDING:
            return None
        if entry.state.status is not TaskStatus.IN_PROGRESS:
            return entry.state
        grown = max(0.0, self._wall() - entry.at)
        values = [entry.state.__dict__[name] for name in TaskState.model_fields]
        values[_RUN_S] = round(values[_RUN_S] + grown, 6)
        values[_RUN_S + 1] = round(values[_RUN_S] * entry.gpus, 6)
        return TaskState.of(*values)

    def result(self, task_id: str) -> tuple[TaskState, Any] | None:
        """``(state, value)`` of a success whose small result the copy holds, or None."""
        entry = self.held(task_id)
        if entry is None or entry.result is None:
            return None
        return entry.state, entry.result[0]

    def stream(self, task_id: str, start: int, attempt: int | None) -> StreamRead | None:
        """A stream reader's answer (see :func:`~raytask.core.messages.stream_read`) for a
        running or finished task, or None (ask the manager): also when the reader is
        before the first chunk the copy holds.

        No fence applies (see :meth:`answered`): the reader's place says what it has seen.
        A copy behind it (an older attempt, fewer chunks) answers that nothing is new yet,
        never older chunks; a finished task's chunks are all here, as in the manager.
        """
        state = self._state(self.held(task_id, fenced=False))
        if state is None:
            return None
        stream = self._streams.get(task_id)
        current, count = (0, 0) if stream is None else (stream.attempt, len(stream))
        if not state.status.finished and (
            (attempt is not None and current < attempt)
            or (start > count and attempt in (None, current))
        ):
            return StreamRead(state, attempt or current, start, [], False)
        read = stream_read(state, stream, start, attempt)
        return None if stream is not None and read.start < stream.base else read

    async def stream_wait(
        self, task_id: str, start: int, attempt: int | None, wait_s: float
    ) -> StreamRead | None:
        """:meth:`stream` once it tells the reader something new, or after ``wait_s``;
        None as soon as the copy cannot answer (ask the manager)."""
        deadline = self._clock() + wait_s
        while True:
            read = self.stream(task_id, start, attempt)
            if read is None or news_for(read, attempt) or self._clock() >= deadline:
                return read
            await self._waiters.wait(task_id, min(deadline, self._trusted_until) - self._clock())

    def answered(self, task_id: str) -> None:
        """The manager answered for this task directly: the copy's entry of it waits for
        the group of a poll sent after now (one already on its way may be older)."""
        self._fenced[task_id] = self._sent + 1

    async def finished(self, task_id: str, wait_s: float) -> bool | None:
        """Wait up to ``wait_s`` for a held task to finish: True once it has, False after
        ``wait_s``; None as soon as the copy cannot tell (ask the manager)."""
        deadline = self._clock() + wait_s
        while True:
            entry = self.held(task_id)
            if entry is None:
                return None
            if entry.state.status.finished:
                return True
            left = min(deadline, self._trusted_until) - self._clock()
            if left <= 0:
                return None if not self.current else False
            await self._waiters.wait(task_id, left)

    def _wake(self, task_ids: Any) -> None:
        if self._waiters:
            for task_id in task_ids:
                self._waiters.wake(task_id)
