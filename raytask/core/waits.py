"""Long-polls waiting on a task until a change wakes them, or until their timeout.

One event per task, shared by its waiters and dropped with the last of them; waking a task
sets its event and forgets it. The manager's ``wait`` and an ingress copy's waits both use
it: nothing polls.
"""

from __future__ import annotations

import asyncio


class Waits:
    """Waiters by task id."""

    def __init__(self) -> None:
        self._events: dict[str, tuple[asyncio.Event, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._events)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._events

    def waiting(self, task_id: str) -> int:
        """How many wait on ``task_id`` now (they share one event)."""
        held = self._events.get(task_id)
        return 0 if held is None else held[1][0]

    async def wait(self, task_id: str, timeout_s: float) -> bool:
        """Wait until ``task_id`` is woken (True) or ``timeout_s`` has passed (False)."""
        event, waiters = self._events.setdefault(task_id, (asyncio.Event(), [0]))
        waiters[0] += 1
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            waiters[0] -= 1
            if not waiters[0] and self._events.get(task_id, (None,))[0] is event:
                del self._events[task_id]

    def wake(self, task_id: str) -> None:
        held = self._events.pop(task_id, None)
        if held is not None:
            held[0].set()

    def wake_all(self) -> None:
        for task_id in list(self._events):
            self.wake(task_id)
