"""The HTTP tier: the real routes over an in-process backend (no Ray).

``LocalBackend`` keeps tasks in the real :class:`TaskTable` and runs them with the real
replica-side runner, but only when a test calls :meth:`LocalBackend.drain`, so every
state can be observed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from deployments.demo import Demo
from raytask.core.config import AppConfig, SubmitOptions
from raytask.core.endpoint import discover
from raytask.core.errors import EndpointNotFoundError, TaskFailedError
from raytask.core.state import TaskState
from raytask.core.table import TaskTable
from raytask.server.routes import Routes
from raytask.server.runner import AttemptFailed, run_attempt

from ..unit.conftest import FakeClock


class LocalBackend:
    def __init__(self, config: AppConfig, clock: FakeClock) -> None:
        self.instance = Demo.func_or_class()
        self.endpoints = {
            e.name: e for e in discover(type(self.instance), "Demo", config.task_defaults)
        }
        self.table = TaskTable(config.max_queue_size, config.retry_after_s, clock=clock)
        self.results: dict[str, Any] = {}

    async def submit(
        self, endpoint: str, kwargs: dict[str, Any], options: SubmitOptions
    ) -> TaskState:
        record = self.table.submit(
            endpoint, kwargs, options.apply(self.endpoints[endpoint].options)
        )
        return record.state()

    async def status(self, task_id: str) -> TaskState:
        return self.table.get(task_id).state()

    async def result(self, task_id: str) -> Any:
        self.table.check_result(task_id)
        return self.results[task_id]

    async def cancel(self, task_id: str) -> TaskState:
        self.table.cancel(task_id)
        return self.table.get(task_id).state()

    async def retry(self, task_id: str) -> TaskState:
        return self.table.retry(task_id).state()

    async def call(self, endpoint: str, kwargs: dict[str, Any]) -> Any:
        if endpoint not in self.endpoints:
            raise EndpointNotFoundError(endpoint)
        value = await run_attempt(self.instance, self.endpoints[endpoint].method, kwargs)
        if isinstance(value, AttemptFailed):
            raise TaskFailedError(f"{endpoint} failed: {value.error}")
        return value

    async def ready(self) -> bool:
        return True

    async def queue(self) -> dict[str, Any]:
        return {
            "app": "local",
            "endpoints": self.table.endpoint_stats(self.endpoints),
            "deployments": {"Demo": {"in_flight": 0, "limit": 1}},
        }

    async def drain(self) -> None:
        """Run every pending task to completion."""
        for endpoint in self.endpoints.values():
            while (record := self.table.pop_next(endpoint.name)) is not None:
                value = await run_attempt(self.instance, endpoint.method, record.kwargs)
                if isinstance(value, AttemptFailed):
                    self.table.fail(record.task_id, value.error)
                else:
                    self.results[record.task_id] = value
                    self.table.succeed(record.task_id)


@pytest.fixture
def config() -> AppConfig:
    return AppConfig(max_queue_size=3, max_request_bytes=4096, retry_after_s=2)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)


@pytest.fixture
def backend(config: AppConfig, clock: FakeClock) -> LocalBackend:
    return LocalBackend(config, clock)


@pytest.fixture
async def client(backend: LocalBackend, config: AppConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = Routes(list(backend.endpoints.values()), backend, config).asgi_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://raytask") as client:
        yield client
