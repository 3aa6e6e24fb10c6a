"""Task handles: a task id and the backend that can ask about it.

One design for every client: a handle holds an id, its endpoint's name and a small
backend (:class:`TaskBackend` or :class:`AsyncTaskBackend`: status, result, cancel and
retry by id). The HTTP clients and the in-cluster clients each provide a backend, so
:class:`Task` and :class:`AsyncTask` are the handles of both, with the same names; the
wait loop is written once per flavour, here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol, Self

from ..core.errors import TaskNotCompletedError, WaitTimeoutError
from ..core.state import Progress, TaskState
from ..core.status import TaskStatus
from .polling import LongPoll, refuse_inside_event_loop
from .protocol import as_type_of
from .streaming import StreamEvents


@contextlib.contextmanager
def _python_hint() -> Iterator[None]:
    """A "not completed yet" error, with how a Python caller waits for the result."""
    try:
        yield
    except TaskNotCompletedError as exc:
        hint = "; wait for it with task.get(timeout=...) or task.wait()"
        if hint not in exc.message:
            exc.message += hint
            exc.args = (exc.message, *exc.args[1:])
        raise


class TaskBackend(Protocol):
    """What a blocking handle needs from its client, by task id."""

    def status(self, task_id: str, wait_s: float | None = None) -> TaskState: ...
    def result(self, task_id: str, wait_s: float | None = None) -> Any: ...
    def stream(self, task_id: str, reader: StreamEvents) -> Iterator[Any]: ...
    def cancel(self, task_id: str) -> TaskState: ...
    def retry(self, task_id: str) -> TaskState: ...


class AsyncTaskBackend(Protocol):
    """What an async handle needs from its client, by task id."""

    async def status(self, task_id: str, wait_s: float | None = None) -> TaskState: ...
    async def result(self, task_id: str, wait_s: float | None = None) -> Any: ...
    def stream(self, task_id: str, reader: StreamEvents) -> AsyncIterator[Any]: ...
    async def cancel(self, task_id: str) -> TaskState: ...
    async def retry(self, task_id: str) -> TaskState: ...


class TaskIdentity:
    """What every task handle has: an id, its endpoint's name, a repr, equality by id."""

    def __init__(self, task_id: str, endpoint_name: str) -> None:
        self._id = task_id
        self._endpoint_name = endpoint_name
        self._state: TaskState | None = None

    @property
    def progress(self) -> Progress | None:
        """What the task last reported of its progress, as of the last status this handle
        read (``get_state``, ``get_status``, ``wait``, or a client's ``as_completed``)."""
        return None if self._state is None else self._state.progress

    @property
    def last_state(self) -> TaskState | None:
        """The last status answer this handle read, if any (no request is sent)."""
        return self._state

    def _seen(self, answer: TaskState | Exception) -> bool:
        """Keep a status answer read for this task; True if the task is finished (an
        error answer, such as an expired id, is final too)."""
        if isinstance(answer, Exception):
            return True
        self._state = answer
        return answer.status.finished

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


def _timed_out(task_id: str, timeout: float | None) -> WaitTimeoutError:
    return WaitTimeoutError(f"task {task_id} did not finish within {timeout:g} s", task_id)


class Task(TaskIdentity):
    """A submitted task (blocking calls), from :class:`~raytask.SyncHTTPClient` or
    :func:`raytask.get_client`.

    Example::

        task = client.generate.submit(prompt="a mountain")
        task.get_status()            # TaskStatus.PENDING
        image = task.get(timeout=60) # waits up to 60 s
    """

    _async_alternative = "AsyncHTTPClient and `await task.wait()`"

    def __init__(self, backend: TaskBackend, task_id: str, endpoint_name: str) -> None:
        super().__init__(task_id, endpoint_name)
        self._backend = backend

    def get_state(self) -> TaskState:
        """Everything the server knows of the task (:class:`~raytask.TaskState`)."""
        self._state = self._backend.status(self._id)
        return self._state

    def get_status(self) -> TaskStatus:
        """The task's current :class:`~raytask.TaskStatus`."""
        return self.get_state().status

    def _hold(self, wait_s: float) -> None:
        """One long-poll: returns when the task finishes or ``wait_s`` passes."""
        self._state = self._backend.status(self._id, wait_s)

    def wait(self, timeout: float | None = None) -> TaskStatus:
        """Wait until the task finishes (long-polls: the server answers when it does);
        return its final status.

        Raises:
            WaitTimeoutError: it did not finish within ``timeout`` seconds.
            RuntimeError: called from a running event loop (use the async client).
        """
        refuse_inside_event_loop(f"{type(self).__name__}.wait()", self._async_alternative)
        plan = LongPoll(timeout)
        while (wait_s := plan.next_wait()) is not None:
            start = time.monotonic()
            self._state = self._backend.status(self._id, wait_s)
            if self._state.status.finished:
                return self._state.status
            time.sleep(plan.pause_after(wait_s, time.monotonic() - start))
        raise _timed_out(self._id, timeout)

    def get(self, timeout: float | None = None, as_type: Any = None) -> Any:
        """The result; with ``timeout``, wait up to that many seconds for it first.

        Over HTTP the result is JSON, text or bytes as the server sent it; in the cluster
        it is the method's Python value. ``as_type`` (a pydantic model or any type
        pydantic validates) turns it into that type.

        Raises:
            TaskNotCompletedError: not finished (and no ``timeout`` given).
            TaskFailedError: the task failed; the message carries its error.
            TaskCancelledError: the task was cancelled.
            TaskNotFoundError, TaskExpiredError: unknown id, or the result outlived its TTL.
            WaitTimeoutError: ``timeout`` passed first.
        """
        if timeout is None:
            with _python_hint():
                return as_type_of(self._backend.result(self._id), as_type)
        refuse_inside_event_loop(f"{type(self).__name__}.get(timeout=)", self._async_alternative)
        plan = LongPoll(timeout)  # one request when the task finishes within LONG_POLL_S
        while (wait_s := plan.next_wait()) is not None:
            start = time.monotonic()
            try:
                return as_type_of(self._backend.result(self._id, wait_s), as_type)
            except TaskNotCompletedError:
                time.sleep(plan.pause_after(wait_s, time.monotonic() - start))
        raise _timed_out(self._id, timeout)

    def stream(self) -> Iterator[Any]:
        """The task's chunks as its method yields them (a generator task), from the first;
        waits for a pending task to start, and ends when the task does (its final state is
        then this handle's). A task that is not a generator yields nothing.

        Raises:
            StreamReset: the task lost its attempt and runs again; ``stream()`` again
                reads the new attempt's chunks.
        """
        reader = StreamEvents()
        yield from self._backend.stream(self._id, reader)
        if reader.state is not None:
            self._state = reader.state

    def cancel(self) -> TaskStatus:
        """Cancel the task if queued, stop it if running; returns ``CANCELLED``."""
        return self._backend.cancel(self._id).status

    def retry(self) -> Self:
        """Run the task again with the same inputs; returns the new task."""
        state = self._backend.retry(self._id)
        return type(self)(self._backend, state.task_id, self._endpoint_name)


class AsyncTask(TaskIdentity):
    """A submitted task (awaitable calls), from :class:`~raytask.AsyncHTTPClient` or
    :func:`raytask.get_async_client`.

    Example::

        task = await client.generate.submit(prompt="a mountain")
        image = await task.get(timeout=60)
    """

    def __init__(self, backend: AsyncTaskBackend, task_id: str, endpoint_name: str) -> None:
        super().__init__(task_id, endpoint_name)
        self._backend = backend

    async def get_state(self) -> TaskState:
        """Everything the server knows of the task (:class:`~raytask.TaskState`)."""
        self._state = await self._backend.status(self._id)
        return self._state

    async def get_status(self) -> TaskStatus:
        """The task's current :class:`~raytask.TaskStatus`."""
        return (await self.get_state()).status

    async def _hold(self, wait_s: float) -> None:
        """One long-poll: returns when the task finishes or ``wait_s`` passes."""
        self._state = await self._backend.status(self._id, wait_s)

    async def wait(self, timeout: float | None = None) -> TaskStatus:
        """Wait until the task finishes (long-polls); return its final status.

        Raises:
            WaitTimeoutError: it did not finish within ``timeout`` seconds.
        """
        plan = LongPoll(timeout)
        while (wait_s := plan.next_wait()) is not None:
            start = time.monotonic()
            self._state = await self._backend.status(self._id, wait_s)
            if self._state.status.finished:
                return self._state.status
            await asyncio.sleep(plan.pause_after(wait_s, time.monotonic() - start))
        raise _timed_out(self._id, timeout)

    async def get(self, timeout: float | None = None, as_type: Any = None) -> Any:
        """The result; with ``timeout``, wait up to that many seconds for it first.

        Raises the same errors as :meth:`Task.get`.
        """
        if timeout is None:
            with _python_hint():
                return as_type_of(await self._backend.result(self._id), as_type)
        plan = LongPoll(timeout)
        while (wait_s := plan.next_wait()) is not None:
            start = time.monotonic()
            try:
                return as_type_of(await self._backend.result(self._id, wait_s), as_type)
            except TaskNotCompletedError:
                await asyncio.sleep(plan.pause_after(wait_s, time.monotonic() - start))
        raise _timed_out(self._id, timeout)

    async def stream(self) -> AsyncIterator[Any]:
        """The task's chunks as they come (see :meth:`Task.stream`)."""
        reader = StreamEvents()
        async for chunk in self._backend.stream(self._id, reader):
            yield chunk
        if reader.state is not None:
            self._state = reader.state

    async def cancel(self) -> TaskStatus:
        """Cancel the task if queued, stop it if running; returns ``CANCELLED``."""
        return (await self._backend.cancel(self._id)).status

    async def retry(self) -> Self:
        """Run the task again with the same inputs; returns the new task."""
        state = await self._backend.retry(self._id)
        return type(self)(self._backend, state.task_id, self._endpoint_name)
