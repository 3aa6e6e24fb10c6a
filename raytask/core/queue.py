"""One endpoint's pending queue: priority first, then fair turns across tenants, FIFO within
a tenant, with queue positions in O(log n).

Priorities are few (-10..10), so the queue is one *lane* per priority, plus a lane in front
of them all for tasks re-queued after a lost attempt (they have waited already).

Inside a lane, tenants take weighted turns by virtual time (stride scheduling, as start-time
fair queuing does it): a task of a tenant with weight ``w`` gets the tag
``max(lane's virtual time, tenant's last tag) + STRIDE / w``, and tasks run in tag order
(arrival order breaks ties). A tenant's tags only grow, so its tasks stay FIFO; a tenant
that arrives behind another's long backlog starts from the lane's virtual time (the tag of
the last task taken), so it waits for one turn, not for the backlog; and a tenant that was
idle cannot bank turns. Weights 3:1 with both backlogged start tasks 3:1.

Tags are integers and fixed once given, so the lane keeps every queued task in one sorted
list (``sortedcontainers``, made for this) and a task's position is its rank there plus the
tasks of the lanes ahead; each tenant's tasks wait in a FIFO, and its first one in a second
sorted list: push, remove, pop and position are each O(log n). ``pop`` may skip tenants (at
their ``max_running``): it walks the tenants' first tasks in tag order, so a held-back
tenant's backlog costs one step, not one per task.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Iterator

from sortedcontainers import SortedList

MIN_PRIORITY, MAX_PRIORITY = -10, 10
_FRONT = MAX_PRIORITY + 1  # the lane of re-queued tasks
STRIDE = 720_720  # divisible by 1..16: integer weights give exact turns
ANONYMOUS = "anonymous"  # the tenant of every task of an app without tokens

_Key = tuple[int, int, str]  # (tag, arrival, task id): the order tasks run in


def stride(weight: float) -> int:
    """The tag step of a tenant with ``weight`` (> 0): its share is ``weight / sum``."""
    return max(1, round(STRIDE / weight))


class _Lane:
    """One priority's tasks: each tenant's FIFO and the weighted turns across them."""

    __slots__ = ("_arrivals", "_heads", "_keys", "_last", "_order", "_tenants", "_vtime")

    def __init__(self) -> None:
        self._order: SortedList = SortedList()  # every queued task's key
        self._heads: SortedList = SortedList()  # each tenant's first task's key
        # tenant -> its tasks' keys in arrival (= tag) order, and how many are queued; a
        # task cancelled mid-way stays in the deque until it reaches the front (its key
        # is no longer in _keys), so a pop and a push are O(1) there
        self._tenants: dict[str, tuple[deque[_Key], list[int]]] = {}
        self._keys: dict[str, tuple[_Key, str]] = {}  # task id -> (key, tenant)
        self._last: dict[str, int] = {}  # tenant -> tag of its last queued task
        self._vtime = 0  # the highest tag taken so far
        self._arrivals = 0

    def __len__(self) -> int:
        return len(self._keys)

    def push(self, task_id: str, tenant: str, step: int) -> None:
        tag = max(self._vtime, self._last.get(tenant, 0)) + step
        self._arrivals += 1
        key = (tag, self._arrivals, task_id)
        self._last[tenant] = tag
        self._keys[task_id] = (key, tenant)
        self._order.add(key)
        own = self._tenants.get(tenant)
        if own is None:
            own = self._tenants[tenant] = (deque(), [0])
            self._heads.add(key)
        own[0].append(key)
        own[1][0] += 1

    def _live(self, key: _Key) -> bool:
        entry = self._keys.get(key[2])
        return entry is not None and entry[0] == key

    def remove(self, task_id: str, taken: bool = False) -> bool:
        entry = self._keys.pop(task_id, None)
        if entry is None:
            return False
        key, tenant = entry
        self._order.remove(key)
        keys, count = self._tenants[tenant]
        count[0] -= 1
        if not count[0]:  # an idle tenant keeps no tag: it starts from the lane's time again
            del self._tenants[tenant], self._last[tenant]
            self._heads.remove(key)  # (a deque's front is always a queued task)
        elif keys[0] == key:
            self._heads.remove(key)
            keys.popleft()
            while not self._live(keys[0]):  # cancelled ones that reached the front
                keys.popleft()
            self._heads.add(keys[0])
        if taken:
            self._vtime = max(self._vtime, key[0])
        return True

    def first(self, skip: Container[str]) -> str | None:
        """The task that runs next, passing over the tenants in ``skip``."""
        for key in self._heads:
            if self._keys[key[2]][1] not in skip:
                return key[2]
        return None

    def rank(self, task_id: str) -> int:
        return self._order.bisect_left(self._keys[task_id][0])

    def heads(self) -> list[str]:
        return [key[2] for key in self._heads]

    def __iter__(self) -> Iterator[str]:
        return (key[2] for key in self._order)


class PendingQueue:
    """The pending tasks of one endpoint: highest priority first, then fair turns across
    tenants, FIFO within a tenant."""

    __slots__ = ("_lane_of", "_lanes")

    def __init__(self) -> None:
        self._lanes: dict[int, _Lane] = {}
        self._lane_of: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._lane_of)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._lane_of

    def push(
        self,
        task_id: str,
        priority: int,
        front: bool = False,
        tenant: str = ANONYMOUS,
        step: int = STRIDE,
    ) -> None:
        """Queue ``task_id`` of ``tenant`` (whose :func:`stride` is ``step``); ``front``
        puts it ahead of every priority (a task re-queued after a lost attempt)."""
        lane = _FRONT if front else priority
        if lane not in self._lanes:
            self._lanes[lane] = _Lane()
        self._lanes[lane].push(task_id, tenant, step)
        self._lane_of[task_id] = lane

    def remove(self, task_id: str, taken: bool = False) -> bool:
        """Drop ``task_id`` (``taken``: it starts now, else it was cancelled or expired);
        False if it was not queued."""
        lane = self._lane_of.pop(task_id, None)
        return lane is not None and self._lanes[lane].remove(task_id, taken)

    def peek(self, skip: Container[str] = ()) -> str | None:
        """The task that runs next, if any, passing over the tenants in ``skip``."""
        for lane in sorted(self._lanes, reverse=True):
            task_id = self._lanes[lane].first(skip)
            if task_id is not None:
                return task_id
        return None

    def pop(self, skip: Container[str] = ()) -> str | None:
        """Take the task that runs next, if any (see :meth:`peek`)."""
        task_id = self.peek(skip)
        if task_id is not None:
            self.remove(task_id, taken=True)
        return task_id

    def position(self, task_id: str) -> int | None:
        """How many tasks run before ``task_id`` (0: it is next), held-back tenants'
        counted as if they ran; None if not queued."""
        lane = self._lane_of.get(task_id)
        if lane is None:
            return None
        ahead = sum(len(other) for key, other in self._lanes.items() if key > lane)
        return ahead + self._lanes[lane].rank(task_id)

    def firsts(self) -> list[str]:
        """Each tenant's first task of each priority (the longest waiting is among them)."""
        return [task_id for lane in self._lanes.values() for task_id in lane.heads()]

    def __iter__(self) -> Iterator[str]:
        """The queued ids in the order they will run (no tenant held back)."""
        for lane in sorted(self._lanes, reverse=True):
            yield from self._lanes[lane]
