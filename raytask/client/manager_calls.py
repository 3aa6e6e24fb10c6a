"""The in-cluster clients' calls to the task manager actor, behind the handles.

:class:`ManagerTasks` and :class:`AsyncManagerTasks` are the task handles' backends
(:class:`~raytask.client.handles.TaskBackend`); :class:`ManagerJobs` and
:class:`AsyncManagerJobs` the batch job handles' (:class:`~raytask.client.jobs.JobBackend`),
which send the ``/v1`` routes' commands to the manager's ``job`` method. Blocking calls go
through :func:`ask`, which never waits without end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import ray

from ..core.errors import ServiceUnavailableError, unwrap
from ..core.messages import StreamRead
from ..core.queue import ANONYMOUS
from ..core.state import TaskState
from .jobs import PIECE
from .streaming import READ_WAIT_S, StreamEvents, aread_reads, read_reads

CALL_TIMEOUT_S = 60.0
"""How long a blocking call waits for the task manager's answer (beyond the time a
long-poll holds it on purpose) before it raises :class:`ServiceUnavailableError`."""

_WHAT_TO_CHECK = (
    "the cluster may be overloaded, or the manager restarting: check `ray status`, and the "
    "task manager's log (its lines start with 'raytask manager of'), then retry"
)


def ask(refs: Any, hold_s: float = 0.0) -> Any:
    """``ray.get(refs)``, bounded: a manager that does not answer within
    :data:`CALL_TIMEOUT_S` (plus ``hold_s``) is an error that says what to check, never
    a wait without end."""
    timeout_s = hold_s + CALL_TIMEOUT_S
    try:
        return ray.get(refs, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise ServiceUnavailableError(
            f"the task manager did not answer within {timeout_s:g} s: {_WHAT_TO_CHECK}"
        ) from None
    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
        raise ServiceUnavailableError(
            f"the task manager is unavailable ({type(exc).__name__}): {_WHAT_TO_CHECK}"
        ) from None


class ManagerTasks:
    """The :class:`~raytask.client.handles.TaskBackend` over the manager actor."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    def status(self, task_id: str, wait_s: float | None = None) -> TaskState:
        if wait_s:
            return unwrap(ask(self._manager.wait.remote(task_id, wait_s), hold_s=wait_s))
        return unwrap(ask(self._manager.status.remote(task_id)))

    def result(self, task_id: str, wait_s: float | None = None) -> Any:
        call = self._manager.result.remote(task_id, None, None, wait_s or 0.0)  # one call
        (held,) = unwrap(ask(call, hold_s=wait_s or 0.0))
        return ray.get(held) if isinstance(held, ray.ObjectRef) else held

    def stream(self, task_id: str, reader: StreamEvents) -> Iterator[Any]:
        def read(start: int, attempt: int | None) -> StreamRead:
            call = self._manager.stream.remote(task_id, start, attempt, READ_WAIT_S)
            return unwrap(ask(call, hold_s=READ_WAIT_S))

        return read_reads(read, reader)

    def cancel(self, task_id: str) -> TaskState:
        return unwrap(ask(self._manager.cancel.remote(task_id)))

    def retry(self, task_id: str) -> TaskState:
        return unwrap(ask(self._manager.retry.remote(task_id)))


class AsyncManagerTasks:
    """The :class:`~raytask.client.handles.AsyncTaskBackend` over the manager actor."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    async def status(self, task_id: str, wait_s: float | None = None) -> TaskState:
        if wait_s:
            return unwrap(await self._manager.wait.remote(task_id, wait_s))
        return unwrap(await self._manager.status.remote(task_id))

    async def result(self, task_id: str, wait_s: float | None = None) -> Any:
        call = self._manager.result.remote(task_id, None, None, wait_s or 0.0)  # one call
        (held,) = unwrap(await call)
        return await held if isinstance(held, ray.ObjectRef) else held

    def stream(self, task_id: str, reader: StreamEvents) -> AsyncIterator[Any]:
        async def read(start: int, attempt: int | None) -> StreamRead:
            call = self._manager.stream.remote(task_id, start, attempt, READ_WAIT_S)
            try:
                return unwrap(await call)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                raise ServiceUnavailableError(f"the task manager did not answer: {exc}") from None

        return aread_reads(read, reader)

    async def cancel(self, task_id: str) -> TaskState:
        return unwrap(await self._manager.cancel.remote(task_id))

    async def retry(self, task_id: str) -> TaskState:
        return unwrap(await self._manager.retry.remote(task_id))


class ManagerJobs:
    """The :class:`~raytask.client.jobs.JobBackend` over the manager actor (blocking)."""

    def __init__(self, manager: Any, tenant: str = ANONYMOUS) -> None:
        self._manager, self._tenant = manager, tenant

    def _job(self, command: str, *args: Any) -> Any:
        return unwrap(ask(self._manager.job.remote(command, *args)))

    def start(self, data: bytes, url: str, priority: int) -> str:
        """Upload ``data`` in pieces and start a job on it; returns its id."""
        upload = self._job("file_open", "batch.jsonl", "batch", None)
        for at in range(0, len(data), PIECE):
            self._job("file_write", upload, data[at : at + PIECE])
        file_id = self._job("file_close", upload)["id"]
        job = self._job("batch_create", file_id, url, "24h", None, priority, None, self._tenant)
        return job["id"]

    def get(self, batch_id: str) -> dict[str, Any]:
        return self._job("batch_get", batch_id)

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return self._job("batch_cancel", batch_id)

    def read(self, file_id: str, offset: int, size: int) -> bytes:
        return self._job("file_read", file_id, offset, size)


class AsyncManagerJobs:
    """The :class:`~raytask.client.jobs.AsyncJobBackend` over the manager actor."""

    def __init__(self, manager: Any, tenant: str = ANONYMOUS) -> None:
        self._manager, self._tenant = manager, tenant

    async def _job(self, command: str, *args: Any) -> Any:
        return unwrap(await self._manager.job.remote(command, *args))

    async def start(self, data: bytes, url: str, priority: int) -> str:
        upload = await self._job("file_open", "batch.jsonl", "batch", None)
        for at in range(0, len(data), PIECE):
            await self._job("file_write", upload, data[at : at + PIECE])
        file_id = (await self._job("file_close", upload))["id"]
        job = await self._job(
            "batch_create", file_id, url, "24h", None, priority, None, self._tenant
        )
        return job["id"]

    async def get(self, batch_id: str) -> dict[str, Any]:
        return await self._job("batch_get", batch_id)

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._job("batch_cancel", batch_id)

    async def read(self, file_id: str, offset: int, size: int) -> bytes:
        return await self._job("file_read", file_id, offset, size)
