"""One endpoint's pending queue: priority order, FIFO among equals, positions in O(log n).

Priorities are few (-10..10), so the queue is one FIFO *lane* per priority, plus a lane in
front of them all for tasks re-queued after a lost attempt (they have waited already).
A task's position is the number of tasks in the lanes ahead of its own (a sum over at most
22 counters) plus its rank in its lane. The rank comes from a Fenwick tree over the lane's
arrival numbers (1 while queued, 0 once gone), so a cancel in the middle of a long queue,
a pop, and a position are each O(log n): no operation walks the queue.
"""

from __future__ import annotations

from collections.abc import Iterator

MIN_PRIORITY, MAX_PRIORITY = -10, 10
_FRONT = MAX_PRIORITY + 1  # the lane of re-queued tasks


class _Lane:
    """A FIFO of task ids that can drop any member and rank any member by arrival."""

    __slots__ = ("_head", "_ids", "_index", "_tree")

    def __init__(self) -> None:
        self._ids: list[str | None] = []  # by arrival number; None once gone
        self._tree: list[int] = [0]  # Fenwick tree, 1-based, over "still queued"
        self._index: dict[str, int] = {}
        self._head = 0  # every arrival before it is gone

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._index

    def _add(self, position: int, delta: int) -> None:
        i = position + 1
        while i < len(self._tree):
            self._tree[i] += delta
            i += i & -i

    def _prefix(self, count: int) -> int:
        """Queued members among the first ``count`` arrivals."""
        total, i = 0, count
        while i > 0:
            total += self._tree[i]
            i -= i & -i
        return total

    def push(self, task_id: str) -> None:
        position = len(self._ids)
        self._ids.append(task_id)
        self._index[task_id] = position
        # Fenwick append: node i covers arrivals (i - lowbit(i), i].
        i = position + 1
        low = i - (i & -i)
        self._tree.append(1 + self._prefix(position) - self._prefix(low))

    def remove(self, task_id: str) -> bool:
        position = self._index.pop(task_id, None)
        if position is None:
            return False
        self._ids[position] = None
        self._add(position, -1)
        self._compact()
        return True

    def first(self) -> str | None:
        while self._head < len(self._ids) and self._ids[self._head] is None:
            self._head += 1
        return self._ids[self._head] if self._head < len(self._ids) else None

    def rank(self, task_id: str) -> int:
        return self._prefix(self._index[task_id])

    def __iter__(self) -> Iterator[str]:
        return (task_id for task_id in self._ids[self._head :] if task_id is not None)

    def _compact(self) -> None:
        # Renumber once the gone outnumber the queued, so memory follows the queue's size
        # (amortised O(1) per removal).
        if len(self._ids) < 64 or 2 * len(self._index) > len(self._ids):
            return
        live = [task_id for task_id in self._ids if task_id is not None]
        self._ids, self._tree, self._index, self._head = [], [0], {}, 0
        for task_id in live:
            self.push(task_id)


class PendingQueue:
    """The pending tasks of one endpoint, highest priority first, FIFO among equals."""

    __slots__ = ("_lane_of", "_lanes")

    def __init__(self) -> None:
        self._lanes: dict[int, _Lane] = {}
        self._lane_of: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._lane_of)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._lane_of

    def push(self, task_id: str, priority: int, front: bool = False) -> None:
        """Queue ``task_id`` behind its equals; ``front`` puts it ahead of every priority
        (a task re-queued after a lost attempt)."""
        lane = _FRONT if front else priority
        self._lanes.setdefault(lane, _Lane()).push(task_id)
        self._lane_of[task_id] = lane

    def remove(self, task_id: str) -> bool:
        """Drop ``task_id`` (cancelled or expired); False if it was not queued."""
        lane = self._lane_of.pop(task_id, None)
        return lane is not None and self._lanes[lane].remove(task_id)

    def peek(self) -> str | None:
        """The task that runs next, if any."""
        for lane in sorted(self._lanes, reverse=True):
            task_id = self._lanes[lane].first()
            if task_id is not None:
                return task_id
        return None

    def pop(self) -> str | None:
        """Take the task that runs next, if any."""
        task_id = self.peek()
        if task_id is not None:
            self.remove(task_id)
        return task_id

    def position(self, task_id: str) -> int | None:
        """How many tasks run before ``task_id`` (0: it is next); None if not queued."""
        lane = self._lane_of.get(task_id)
        if lane is None:
            return None
        ahead = sum(len(other) for key, other in self._lanes.items() if key > lane)
        return ahead + self._lanes[lane].rank(task_id)

    def firsts(self) -> list[str]:
        """The first task of each priority (the longest waiting is among them)."""
        return [task_id for lane in self._lanes.values() if (task_id := lane.first())]

    def __iter__(self) -> Iterator[str]:
        """The queued ids in the order they will run."""
        for lane in sorted(self._lanes, reverse=True):
            yield from self._lanes[lane]
