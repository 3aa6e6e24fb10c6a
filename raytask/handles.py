"""Task handles: a task id and the client that can ask about it.

:class:`Task` (sync) and :class:`AsyncTask` expose the same names; the request building,
response parsing and the polling policy live once, in :mod:`raytask.protocol`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .protocol import (
    RemoteEndpoint,
    WaitTimeoutError,
    as_type_of,
    backoff,
    refuse_inside_event_loop,
)
from .status import TaskStatus

if TYPE_CHECKING:
    from .http_client import AsyncHTTPClient, SyncHTTPClient


class TaskIdentity:
    """What every task handle has: an id, its endpoint's name, a repr, equality by id."""

    def __init__(self, task_id: str, endpoint_name: str) -> None:
        self._id = task_id
        self._endpoint_name = endpoint_name

    @property
    def id(self) -> str:
        """The task id (32 hex digits)."""
        return self._id

    @property
    def endpoint(self) -> str:
        """The name of the endpoint the task was submitted to."""
        return self._endpoint_name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self._id!r}, endpoint={self._endpoint_name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskIdentity) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)


def wait_sync(handle: Any, timeout: float | None, alternative: str) -> TaskStatus:
    """Poll ``handle.get_status()`` with backoff until the task finishes (blocking)."""
    refuse_inside_event_loop(f"{type(handle).__name__}.wait()", alternative)
    try:
        for delay in backoff(timeout):
            status = handle.get_status()
            if status.finished:
                return status
            time.sleep(delay)
    except WaitTimeoutError:
        raise _timed_out(handle.id, timeout) from None
    raise AssertionError("unreachable")


async def wait_async(handle: Any, timeout: float | None) -> TaskStatus:
    """Poll ``await handle.get_status()`` with backoff until the task finishes."""
    try:
        for delay in backoff(timeout):
            status = await handle.get_status()
            if status.finished:
                return status
            await asyncio.sleep(delay)
    except WaitTimeoutError:
        raise _timed_out(handle.id, timeout) from None
    raise AssertionError("unreachable")


def _timed_out(task_id: str, timeout: float | None) -> WaitTimeoutError:
    return WaitTimeoutError(f"task {task_id} did not finish within {timeout:g} s", task_id)


class _Handle(TaskIdentity):
    def __init__(self, client: Any, endpoint: RemoteEndpoint, task_id: str) -> None:
        super().__init__(task_id, endpoint.name)
        self._client = client
        self._endpoint = endpoint


class Task(_Handle):
    """A submitted task, seen through a :class:`~raytask.SyncHTTPClient`.

    Example::

        task = client.generate.submit(prompt="a mountain")
        task.get_status()            # TaskStatus.PENDING
        image = task.get(timeout=60) # waits up to 60 s
    """

    _client: SyncHTTPClient

    def get_status(self) -> TaskStatus:
        """The task's current :class:`~raytask.TaskStatus`."""
        return self._client._task_state(self._endpoint.status(self._id))[1]

    def wait(self, timeout: float | None = None) -> TaskStatus:
        """Poll (with backoff) until the task finishes; return its final status.

        Raises:
            WaitTimeoutError: it did not finish within ``timeout`` seconds.
            RuntimeError: called from a running event loop (use :class:`AsyncTask`).
        """
        return wait_sync(self, timeout, "AsyncHTTPClient and `await task.wait()`")

    def get(self, timeout: float | None = None, as_type: Any = None) -> Any:
        """The result; with ``timeout``, wait up to that many seconds for it first.

        The result is JSON, text or bytes as the server sent it; ``as_type`` (a pydantic
        model or any type pydantic validates) turns it into that type.

        Raises:
            TaskNotCompletedError: not finished (and no ``timeout`` given).
            TaskFailedError: the task failed; the message carries its error.
            TaskCancelledError: the task was cancelled.
            TaskNotFoundError, TaskExpiredError: unknown id, or the result outlived its TTL.
            WaitTimeoutError: ``timeout`` passed first.
        """
        if timeout is not None:
            self.wait(timeout)
        return as_type_of(self._client._result(self._endpoint.get(self._id)), as_type)

    def cancel(self) -> TaskStatus:
        """Cancel the task if queued, stop it if running; returns ``CANCELLED``."""
        return self._client._task_state(self._endpoint.cancel(self._id))[1]

    def retry(self) -> Task:
        """Run the task again with the same inputs; returns the new task."""
        task_id, _ = self._client._task_state(self._endpoint.retry(self._id))
        return Task(self._client, self._endpoint, task_id)


class AsyncTask(_Handle):
    """A submitted task, seen through an :class:`~raytask.AsyncHTTPClient`.

    Example::

        task = await client.generate.submit(prompt="a mountain")
        image = await task.get(timeout=60)
    """

    _client: AsyncHTTPClient

    async def get_status(self) -> TaskStatus:
        """The task's current :class:`~raytask.TaskStatus`."""
        return (await self._client._task_state(self._endpoint.status(self._id)))[1]

    async def wait(self, timeout: float | None = None) -> TaskStatus:
        """Poll (with backoff) until the task finishes; return its final status.

        Raises:
            WaitTimeoutError: it did not finish within ``timeout`` seconds.
        """
        return await wait_async(self, timeout)

    async def get(self, timeout: float | None = None, as_type: Any = None) -> Any:
        """The result; with ``timeout``, wait up to that many seconds for it first.

        Raises the same errors as :meth:`Task.get`.
        """
        if timeout is not None:
            await self.wait(timeout)
        return as_type_of(await self._client._result(self._endpoint.get(self._id)), as_type)

    async def cancel(self) -> TaskStatus:
        """Cancel the task if queued, stop it if running; returns ``CANCELLED``."""
        return (await self._client._task_state(self._endpoint.cancel(self._id)))[1]

    async def retry(self) -> AsyncTask:
        """Run the task again with the same inputs; returns the new task."""
        task_id, _ = await self._client._task_state(self._endpoint.retry(self._id))
        return AsyncTask(self._client, self._endpoint, task_id)
