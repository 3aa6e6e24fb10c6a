"""What the HTTP routes need from the task system, as a protocol.

Two classes implement it: :class:`~raytask.server.ingress.RayBackend` over the task manager
actor, and :class:`~raytask.server.service.TaskService` itself, in process (the HTTP test
tier; it adds ``call``, ``call_stream``, ``ready`` and ``apps``). The task commands have the service's own signatures:
``tests/unit/test_wire.py`` fails when one of the three drifts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from ..core.config import SubmitOptions
from ..core.errors import HTTPError
from ..core.messages import StreamRead, Submit
from ..core.queue import ANONYMOUS
from ..core.state import TaskState
from ..core.usage import UsageQuery


class Backend(Protocol):
    """What the routes need from the task system.

    Status answers are :class:`TaskState` models; errors are raised as
    :class:`raytask.core.errors.HTTPError` subclasses. ``owner`` (token isolation): the
    caller's; another's task answers 404, as an unknown id. ``endpoint``: the per-task routes'
    endpoint; a task of another endpoint answers 404 too.
    """

    async def submit(self, item: Submit) -> TaskState: ...
    async def submit_many(
        self,
        endpoint: str,
        inputs: list[dict[str, Any]],
        options: SubmitOptions,
        owner: str | None = None,
        tenant: str = ANONYMOUS,
    ) -> list[TaskState]: ...
    async def status(
        self, task_id: str, owner: str | None = None, endpoint: str | None = None
    ) -> TaskState: ...
    async def status_many(
        self, task_ids: list[str], owner: str | None = None
    ) -> list[TaskState | HTTPError]: ...
    async def wait(
        self,
        task_id: str,
        wait_s: float,
        owner: str | None = None,
        endpoint: str | None = None,
    ) -> TaskState: ...
    async def result(
        self,
        task_id: str,
        owner: str | None = None,
        endpoint: str | None = None,
        wait_s: float = 0.0,
    ) -> Any: ...
    async def list_tasks(
        self,
        endpoint: str | None,
        statuses: list[str] | None,
        limit: int,
        cursor: int | None,
        owner: str | None = None,
    ) -> tuple[list[TaskState], int | None]: ...
    async def cancel(
        self, task_id: str, owner: str | None = None, endpoint: str | None = None
    ) -> TaskState: ...
    async def cancel_many(
        self,
        endpoint: str | None,
        task_ids: list[str] | None,
        statuses: list[str] | None,
        owner: str | None = None,
    ) -> int: ...
    async def stream(
        self,
        task_id: str,
        start: int = 0,
        attempt: int | None = None,
        wait_s: float = 15.0,
        owner: str | None = None,
        endpoint: str | None = None,
    ) -> StreamRead: ...
    async def delete_many(
        self,
        endpoint: str | None,
        task_ids: list[str] | None,
        status: str | None = None,
        older_than_s: float = 0.0,
        owner: str | None = None,
    ) -> tuple[int, int]: ...
    async def retry(
        self, task_id: str, owner: str | None = None, endpoint: str | None = None
    ) -> TaskState: ...
    async def queue(self) -> dict[str, Any]: ...
    async def usage(self, query: UsageQuery) -> list[dict[str, Any]]: ...
    async def call(self, endpoint: str, kwargs: dict[str, Any]) -> Any: ...
    def call_stream(self, endpoint: str, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """A generator method's chunks as it yields them (a synchronous call, no task)."""
        ...

    async def ready(self) -> bool: ...
    async def apps(self) -> list[tuple[str, str]]:
        """The other raytask apps on the same Serve instance: ``(name, route prefix)``."""
        ...


TASK_COMMANDS = (
    "submit",
    "submit_many",
    "status",
    "status_many",
    "wait",
    "stream",
    "result",
    "list_tasks",
    "cancel",
    "cancel_many",
    "delete_many",
    "retry",
    "queue",
    "usage",
)
"""The :class:`Backend` methods that are :class:`TaskService` commands (the others,
``call``, ``ready`` and ``apps``, are the backend's own)."""
