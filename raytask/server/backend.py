"""What the HTTP routes need from the task system, as a protocol.

The ingress implements it over the task manager actor (:class:`~raytask.server.ingress.RayBackend`);
the HTTP test tier implements it in process over the real task table.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..core.config import SubmitOptions
from ..core.errors import HTTPError
from ..core.state import TaskState


class Backend(Protocol):
    """What the routes need from the task system.

    Status answers are :class:`TaskState` models; errors are raised as
    :class:`raytask.core.errors.HTTPError` subclasses.
    """

    async def submit(
        self,
        endpoint: str,
        kwargs: dict[str, Any],
        options: SubmitOptions,
        idempotency_key: str | None = None,
        owner: str | None = None,
    ) -> TaskState: ...
    async def submit_many(
        self,
        endpoint: str,
        inputs: list[dict[str, Any]],
        options: SubmitOptions,
        owner: str | None = None,
    ) -> list[TaskState]: ...
    async def status(self, task_id: str) -> TaskState: ...
    async def wait(self, task_id: str, wait_s: float) -> TaskState: ...
    async def status_many(self, task_ids: list[str]) -> list[TaskState | HTTPError]: ...
    async def cancel_many(
        self,
        endpoint: str,
        task_ids: list[str] | None,
        statuses: list[str] | None,
        owner: str | None = None,
    ) -> int: ...
    async def list_tasks(
        self,
        endpoint: str | None,
        statuses: list[str] | None,
        limit: int,
        cursor: int | None,
        owner: str | None = None,
    ) -> tuple[list[TaskState], int | None]: ...
    async def result(self, task_id: str) -> Any: ...
    async def cancel(self, task_id: str) -> TaskState: ...
    async def retry(self, task_id: str) -> TaskState: ...
    async def call(self, endpoint: str, kwargs: dict[str, Any]) -> Any: ...
    async def ready(self) -> bool: ...
    async def queue(self) -> dict[str, Any]: ...
