"""The change feed: the manager's task changes, in groups, for the ingress replicas' copies.

Each ingress replica keeps a copy of task states (:class:`~raytask.core.copy.StateCopy`)
so that status reads, ``get`` and long-poll waits answer without an actor call. The copy
follows this feed with a long-poll (:meth:`ChangeFeed.poll`): every change of a task bumps
the feed's version and marks the task, and a poll answers with the current state of every
task marked since the version it holds (a task changed ten times while the poll was on its
way travels once). Under load each subscriber gets at most one group per ``gather_s`` times
the number of subscribers, so the feed costs the manager at most ``1 / gather_s`` calls a
second however many tasks change and however many ingress replicas follow it.

Two rules keep the copies honest:

- **Writes wait for every live copy.** A command that changes a task a copy may hold (a
  cancel, a delete) answers only after :meth:`synced`: every subscriber has asked for a
  version past the change, which it does once it has applied it. So a client that saw its
  write acknowledged never reads an older state from any replica. A subscriber that stops
  asking for ``lease_s`` is dropped (and told to start over if it comes back) rather than
  holding writes up.
- **A copy trusts itself for ``lease_s`` from the sending of its last answered poll**
  (:class:`~raytask.core.copy.StateCopy`): the feed drops a silent subscriber no sooner
  than ``lease_s`` after its last answer, which went out after that poll was sent. A copy
  past its lease sends every read to the manager until a poll gets through.

A streaming task's chunks travel too, each once to each subscriber: a group carries the
chunks a subscriber has not been sent yet (:class:`Chunks`, from the count the feed sent it
in its previous answer), so a copy can answer ``GET /NAME/stream`` as well. A subscriber
that asks from another version than the one last answered (an answer was lost on its way)
is sent every streaming task's chunks from the first again.

A new feed (a restarted manager) has a new ``epoch``: copies that follow the old one start
over empty. Plain asyncio and no Ray, so the rules are unit-tested with a fake clock.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .chunks import ChunkLog
from .record import TaskRecord
from .state import TaskState
from .status import TaskStatus

LEASE_S = 2.0
"""How long a copy trusts itself after sending its last answered poll; the feed drops a
subscriber that has not polled for this long after an answer."""
HOLD_S = 0.5
"""How long a poll waits for a change before it answers empty (the heartbeat that keeps a
copy within its lease)."""
GATHER_S = 0.005
"""Under load, the least time between two answers to one subscriber, per subscriber (so
at most 200 answers a second in all): changes made meanwhile travel together."""
COPY_RESULT_BYTES = 65_536
"""The largest result a copy holds (a larger one is fetched through the manager)."""
MAX_LOG = 200_000
"""Most changed tasks kept for subscribers that lag; one further behind starts over."""
MAX_SENT_STREAMS = 65_536
"""Streaming tasks whose sent chunk count the feed keeps per subscriber (past it, the
oldest's next change carries its chunks from the first again)."""


class Chunks(NamedTuple):
    """A streaming task's chunks a copy has not been sent: ``data`` (each one's JSON) are
    chunks ``first`` on of attempt ``attempt``; ``first + len(data)`` is the task's count."""

    attempt: int
    first: int
    data: list[bytes]


class Entry(NamedTuple):
    """One task as a copy holds it.

    ``state``: its status answer when the group was built (``queue_position`` left out);
    ``at``: the manager's clock then (a running task's seconds grow from it); ``gpus``: its
    deployment's GPUs (for ``gpu_s``); ``result``: ``(value, bytes)`` for a success whose
    small result travels with it, else None; ``chunks``: the streamed chunks this copy has
    not been sent (None: the task streamed none).
    """

    state: TaskState
    at: float
    gpus: float
    result: tuple[Any, int] | None
    chunks: Chunks | None = None


class Group(NamedTuple):
    """One answer of the feed: the changes past the poll's version, up to ``version``.

    ``entries``: task id -> its :class:`Entry`, or None for a task forgotten (deleted or
    past its TTL). ``reset``: the copy must drop everything and follow from ``version``
    (a new subscriber, a dropped one, a restarted manager, or one that lagged too far).
    """

    epoch: str
    version: int
    entries: dict[str, Entry | None]
    reset: bool = False


def copied_result(record: TaskRecord) -> tuple[Any, int] | None:
    """``(value, bytes)`` of a success whose result a copy may hold: kept as it is in the
    manager (not an ``ObjectRef``, not a generator's chunks) and small."""
    result = record.result
    if record.status is not TaskStatus.SUCCESS or result is None or not result.inline:
        return None
    if isinstance(result.value, ChunkLog) or result.size > COPY_RESULT_BYTES:
        return None
    return (result.value, result.size)


@dataclass
class _Subscriber:
    acked: int  # the version it asked past in its latest poll: it holds everything to it
    answered_at: float  # when its latest poll was answered (the lease runs from there)
    answered: int = 0  # the version of that answer
    polling: bool = False  # a poll of it is held here now
    # streaming task id -> (attempt, chunks) sent to it (when it asks past ``answered``)
    sent: dict[str, tuple[int, int]] = field(default_factory=dict)


class ChangeFeed:
    """The manager's side: versions, the changed tasks, subscribers and their acks.

    Args:
        entry: the :class:`Entry` of a task now (its ``chunks`` left None), or None if it
            is no longer held.
        chunks: the chunk log of a task now, if it streamed any.
        clock: monotonic seconds (tests pass a fake).
        lease_s, hold_s, gather_s, max_log: see the module's constants.
    """

    def __init__(
        self,
        entry: Callable[[str], Entry | None],
        chunks: Callable[[str], ChunkLog | None] = lambda task_id: None,
        clock: Callable[[], float] = time.monotonic,
        lease_s: float = LEASE_S,
        hold_s: float = HOLD_S,
        gather_s: float = GATHER_S,
        max_log: int = MAX_LOG,
    ) -> None:
        self._entry, self._chunks = entry, chunks
        self._clock = clock
        self.lease_s, self.hold_s, self.gather_s, self.max_log = lease_s, hold_s, gather_s, max_log
        self.epoch = uuid.uuid4().hex
        self.version = 0
        self._floor = 0  # changes up to this version are no longer in the log
        self._log: OrderedDict[str, int] = OrderedDict()  # task id -> its latest change
        self._subscribers: dict[str, _Subscriber] = {}
        self._changed = asyncio.Event()
        self._acked = asyncio.Event()
        self._quiet_until = float("-inf")

    def quiet(self, seconds: float = LEASE_S) -> None:
        """Hold writes' acknowledgements for ``seconds`` from now: a restarted manager
        calls this, since copies that followed the manager before it may trust themselves
        that long after its last answer, and this feed cannot know them."""
        self._quiet_until = self._clock() + seconds

    @property
    def subscribers(self) -> int:
        """Copies following now: polling, or answered within their lease."""
        now = self._clock()
        return sum(
            s.polling or now - s.answered_at < self.lease_s for s in self._subscribers.values()
        )

    def changed(self, task_id: str) -> None:
        """Mark a task changed (or forgotten): the next group carries its state."""
        if not self._subscribers:  # nobody follows: a new subscriber starts from now
            self._floor = self.version = self.version + 1
            return
        self.version += 1
        self._log[task_id] = self.version
        self._log.move_to_end(task_id)
        if len(self._log) > self.max_log:
            _, self._floor = self._log.popitem(last=False)
        self._changed.set()

    async def poll(self, subscriber: str, epoch: str | None, since: int) -> Group:
        """The changes past ``since`` once there are any (or an empty group after
        ``hold_s``); asking past ``since`` acknowledges every change up to it."""
        now = self._clock()
        held = self._subscribers.get(subscriber)
        if held is None or epoch != self.epoch or since < self._floor or since > self.version:
            self._subscribers[subscriber] = _Subscriber(self.version, now, self.version)
            self._trim()
            return Group(self.epoch, self.version, {}, reset=True)
        held.acked, held.polling = since, True
        self._acked.set()
        self._trim()
        try:
            wait_s = self.hold_s
            while self.version == since and wait_s > 0:
                await self._wait(self._changed_event(), wait_s)
                wait_s = self.hold_s - (self._clock() - now)
            # every subscriber waits its turn: the manager answers at most 1 / gather_s
            # polls a second under load, however many ingress replicas follow it
            gather = held.answered_at + self.gather_s * len(self._subscribers) - self._clock()
            if self.version > since and gather > 0:  # under load: let changes gather
                await asyncio.sleep(gather)
        finally:
            held.polling = False
            held.answered_at = self._clock()
        if self._subscribers.get(subscriber) is not held:  # dropped meanwhile
            return Group(self.epoch, self.version, {}, reset=True)
        if since != held.answered:  # its last answer was lost: it may lack those chunks
            held.sent.clear()
        held.answered = self.version
        return Group(self.epoch, self.version, self._since(since, held.sent))

    def _since(self, since: int, sent: dict[str, tuple[int, int]]) -> dict[str, Entry | None]:
        entries: dict[str, Entry | None] = {}
        for task_id in reversed(self._log):
            if self._log[task_id] <= since:
                break
            entry = self._entry(task_id)
            log = None if entry is None else self._chunks(task_id)
            if log is None:
                sent.pop(task_id, None)
            else:
                entry = entry._replace(chunks=self._unsent(task_id, log, sent))
            entries[task_id] = entry
        return entries

    @staticmethod
    def _unsent(task_id: str, log: ChunkLog, sent: dict[str, tuple[int, int]]) -> Chunks:
        """The chunks of ``log`` not sent to this subscriber yet (all of a new attempt's)."""
        attempt, count = sent.pop(task_id, (log.attempt, 0))
        first = min(count, len(log)) if attempt == log.attempt else 0
        sent[task_id] = (log.attempt, len(log))  # (at the end: the oldest goes first)
        if len(sent) > MAX_SENT_STREAMS:
            del sent[next(iter(sent))]
        return Chunks(log.attempt, first, log.slice(first, len(log)))

    def _changed_event(self) -> asyncio.Event:
        if self._changed.is_set():  # (one loop: no change can slip between these lines)
            self._changed = asyncio.Event()
        return self._changed

    async def synced(self) -> None:
        """Return once every live subscriber has acknowledged the current version; one
        that stays silent for ``lease_s`` after its last answer is dropped instead."""
        target = self.version
        quiet = self._quiet_until - self._clock()
        if quiet > 0:
            await asyncio.sleep(quiet)
        while True:
            self._drop_silent()
            if all(s.acked >= target for s in self._subscribers.values()):
                self._trim()
                return
            if self._acked.is_set():
                self._acked = asyncio.Event()
            await self._wait(self._acked, self.lease_s / 4)

    def _drop_silent(self) -> None:
        """Forget the subscribers silent for ``lease_s`` since their last answer (their
        copies no longer trust themselves; one that comes back starts over)."""
        now = self._clock()
        for name, held in list(self._subscribers.items()):
            if not held.polling and now - held.answered_at >= self.lease_s:
                del self._subscribers[name]

    def _trim(self) -> None:
        """Drop silent subscribers, then the log's changes every subscriber holds."""
        self._drop_silent()
        low = min((s.acked for s in self._subscribers.values()), default=self.version)
        while self._log:
            task_id = next(iter(self._log))
            if self._log[task_id] > low:
                break
            self._floor = max(self._floor, self._log.pop(task_id))
        if not self._subscribers:
            self._floor = self.version

    @staticmethod
    async def _wait(event: asyncio.Event, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            pass
