"""An ingress replica's reads: from its copy of task states when it can, else the manager.

:class:`CopiedReads` wraps the backend the routes use and answers ``status``,
``status_many``, ``wait``, ``result`` and ``stream`` from the replica's
:class:`~raytask.core.copy.StateCopy` when it holds the task (a running or finished one,
within its lease); every other call, and every read the copy cannot answer, goes to the
wrapped backend as before. Owner and endpoint rules are checked on the copy's states as
the manager checks them. A ``get`` with ``wait_s`` waits on the copy and then answers from
it, or makes one call to the manager at most; so does a stream reader's long-poll.

After the manager answers a read directly, the copy answers for that task again only from
a group asked for after that answer (see :meth:`StateCopy.answered`): a read never goes
back to an older state than one the caller has seen from this replica. A stream reader
needs no such fence: its own place says what it has seen (see :meth:`StateCopy.stream`).
"""

from __future__ import annotations

import time
from typing import Any

from ..core.copy import StateCopy
from ..core.errors import HTTPError, unwrap
from ..core.messages import StreamRead, seen_by
from ..core.state import TaskState


class CopiedReads:
    """``backend`` with its reads answered from ``copy`` where it can.

    Args:
        backend: the routes' backend (the manager over Ray, or the service in process).
        copy: this replica's copy, which some loop keeps following the manager's feed.
    """

    def __init__(self, backend: Any, copy: StateCopy) -> None:
        self.backend = backend
        self.copy = copy

    def __getattr__(self, name: str) -> Any:  # every other call: the backend's own
        return getattr(self.backend, name)

    async def status(
        self, task_id: str, owner: str | None = None, endpoint: str | None = None
    ) -> TaskState:
        state = self.copy.state(task_id)
        if state is None:
            state = await self.backend.status(task_id, owner, endpoint)
            self.copy.answered(task_id)
            return state
        return unwrap(seen_by(owner, task_id, state, endpoint))

    async def status_many(
        self, task_ids: list[str], owner: str | None = None
    ) -> list[TaskState | HTTPError]:
        answers: list[TaskState | HTTPError | None] = [self.copy.state(t) for t in task_ids]
        missing = [t for t, answer in zip(task_ids, answers, strict=True) if answer is None]
        direct = iter(await self.backend.status_many(missing, owner) if missing else [])
        for task_id in missing:
            self.copy.answered(task_id)
        return [
            next(direct) if answer is None else seen_by(owner, task_id, answer)
            for task_id, answer in zip(task_ids, answers, strict=True)
        ]

    async def stream(
        self,
        task_id: str,
        start: int = 0,
        attempt: int | None = None,
        wait_s: float = 15.0,
        owner: str | None = None,
        endpoint: str | None = None,
    ) -> StreamRead:
        entry = self.copy.held(task_id, fenced=False)  # (the copy's stream reads need none)
        if entry is not None:
            unwrap(seen_by(owner, task_id, entry.state, endpoint))  # another's: 404 at once
            deadline = time.monotonic() + wait_s
            read = await self.copy.stream_wait(task_id, start, attempt, wait_s)
            if read is not None:
                return read
            wait_s = max(0.0, deadline - time.monotonic())
        read = await self.backend.stream(task_id, start, attempt, wait_s, owner, endpoint)
        self.copy.answered(task_id)
        return read

    async def _waited(
        self, task_id: str, wait_s: float, owner: str | None, endpoint: str | None
    ) -> float | None:
        """Wait on the copy for the task to finish (up to ``wait_s``); the seconds still
        to wait on the manager if the copy cannot tell, else None."""
        entry = self.copy.held(task_id)
        if entry is None:
            return wait_s
        unwrap(seen_by(owner, task_id, entry.state, endpoint))  # another's: 404 at once
        deadline = time.monotonic() + wait_s
        if await self.copy.finished(task_id, wait_s) is None:
            return max(0.0, deadline - time.monotonic())
        return None

    async def wait(
        self,
        task_id: str,
        wait_s: float,
        owner: str | None = None,
        endpoint: str | None = None,
    ) -> TaskState:
        left = await self._waited(task_id, wait_s, owner, endpoint)
        if left is not None:
            state = await self.backend.wait(task_id, left, owner, endpoint)
            self.copy.answered(task_id)
            return state
        return await self.status(task_id, owner, endpoint)

    async def result(
        self,
        task_id: str,
        owner: str | None = None,
        endpoint: str | None = None,
        wait_s: float = 0.0,
    ) -> Any:
        left = await self._waited(task_id, wait_s, owner, endpoint) if wait_s else None
        if left is None:
            held = self.copy.result(task_id)
            if held is not None:
                state, value = held
                unwrap(seen_by(owner, task_id, state, endpoint))
                return value
        return await self.backend.result(task_id, owner, endpoint, left or 0.0)
