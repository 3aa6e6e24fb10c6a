"""The HTTP tier: the real routes over an in-process backend (no Ray).

``LocalBackend`` keeps tasks in the real :class:`TaskTable` and runs them with the real
replica-side runner, but only when a test calls :meth:`LocalBackend.drain` (or, with
``run_after_polls``, when a client has polled long enough), so every state can be observed.
``InProcessServer`` serves those routes to the real Python clients, sync and async.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from deployments.demo import Demo
from raytask.core.config import AppConfig, SubmitOptions
from raytask.core.endpoint import discover
from raytask.core.errors import EndpointNotFoundError, HTTPError, TaskFailedError
from raytask.core.state import TaskState
from raytask.core.status import TaskStatus
from raytask.core.table import TaskTable
from raytask.server.routes import Routes
from raytask.server.runner import AttemptFailed, run_attempt

from ..support import FakeClock


class LocalBackend:
    def __init__(self, config: AppConfig, clock: FakeClock, model: type | None = None) -> None:
        self.instance = (model or Demo.func_or_class)()
        cls = type(self.instance)
        self.endpoints = {e.name: e for e in discover(cls, cls.__name__, config.task_defaults)}
        self.table = TaskTable(
            config.max_queue_size,
            config.retry_after_s,
            clock=clock,
            max_tasks=config.max_tasks,
            max_task_bytes=config.max_task_bytes,
        )
        self.results: dict[str, Any] = {}
        # With a number, a pending task's Nth status read runs the queue (as if the
        # replicas got to it meanwhile): the clients' waits then see tasks finish.
        self.run_after_polls: int | None = None
        self.polls: Counter[str] = Counter()
        self.waits = 0
        self.max_wait_s = 5.0  # the longest a long-poll really waits here (the fuzzer's: less)

    async def submit(
        self,
        endpoint: str,
        kwargs: dict[str, Any],
        options: SubmitOptions,
        idempotency_key: str | None = None,
        owner: str | None = None,
    ) -> TaskState:
        options_ = options.apply(self.endpoints[endpoint].options)
        record = self.table.submit(
            endpoint, kwargs, options_, idempotency_key=idempotency_key, owner=owner
        )
        return self.table.state(record.task_id)

    async def submit_many(
        self,
        endpoint: str,
        inputs: list[dict[str, Any]],
        options: SubmitOptions,
        owner: str | None = None,
    ) -> list[TaskState]:
        options_ = options.apply(self.endpoints[endpoint].options)
        records = self.table.submit_many(endpoint, inputs, options_, owner)
        return [self.table.state(r.task_id) for r in records]

    async def status(self, task_id: str) -> TaskState:
        record = self.table.get(task_id)
        if self.run_after_polls and record.status is TaskStatus.PENDING:
            self.polls[task_id] += 1
            if self.polls[task_id] >= self.run_after_polls:
                await self.drain()
        return self.table.state(task_id)

    async def wait(self, task_id: str, wait_s: float) -> TaskState:
        """A long-poll: reads the status (a poll, for ``run_after_polls``) until the task
        finished or ``wait_s`` passed on the real clock."""
        deadline = time.monotonic() + min(wait_s, self.max_wait_s)
        self.waits += 1
        while True:
            state = await self.status(task_id)
            if state.status.finished or time.monotonic() >= deadline:
                return state
            await asyncio.sleep(0.01)

    async def status_many(self, task_ids: list[str]) -> list[TaskState | HTTPError]:
        answers: list[TaskState | HTTPError] = []
        for task_id in task_ids:
            try:
                answers.append(await self.status(task_id))
            except HTTPError as exc:
                answers.append(exc)
        return answers

    async def cancel_many(
        self,
        endpoint: str,
        task_ids: list[str] | None,
        statuses: list[str] | None,
        owner: str | None = None,
    ) -> int:
        if task_ids is None:
            task_ids = self.table.ids_in(map(TaskStatus, statuses or ()), endpoint)
        cancelled = 0
        for task_id in task_ids:
            mine = owner is None or self.table.owner_of(task_id) == owner
            if self.table.endpoint_of(task_id) == endpoint and mine:
                try:
                    self.table.cancel(task_id)
                    cancelled += 1
                except HTTPError:
                    pass
        return cancelled

    async def list_tasks(
        self,
        endpoint: str | None,
        statuses: list[str] | None,
        limit: int,
        cursor: int | None,
        owner: str | None = None,
    ) -> tuple[list[TaskState], int | None]:
        wanted = None if statuses is None else [TaskStatus(s) for s in statuses]
        records, next_cursor = self.table.list(endpoint, wanted, limit, cursor, owner)
        return [r.state(self.table.position(r)) for r in records], next_cursor

    async def result(self, task_id: str) -> Any:
        self.table.check_result(task_id)
        return self.results[task_id]

    async def cancel(self, task_id: str) -> TaskState:
        self.table.cancel(task_id)
        return self.table.state(task_id)

    async def retry(self, task_id: str) -> TaskState:
        return self.table.state(self.table.retry(task_id).task_id)

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

    async def drain(self, limit: int | None = None) -> None:
        """Run every pending task (or the first ``limit`` found) to completion."""
        for endpoint in self.endpoints.values():
            while limit != 0 and (record := self.table.pop_next(endpoint.name)) is not None:
                limit = None if limit is None else limit - 1
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
def backend(config: AppConfig, clock: FakeClock) -> LocalBackend:
    return LocalBackend(config, clock)


@pytest.fixture
async def client(backend: LocalBackend, config: AppConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = Routes(list(backend.endpoints.values()), backend, config).asgi_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://raytask") as client:
        yield client


class InProcessServer:
    """The real routes, served to httpx transports from one event loop in its own thread.

    Every request, from the sync client or from an async client in any event loop, runs
    in that one loop, so the backend's state is only ever touched there.
    """

    def __init__(self, app: Any) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.paths: list[str] = []

    async def _serve(self, method: str, url: str, headers: Any, body: bytes) -> httpx.Response:
        request = httpx.Request(method, url, headers=headers, content=body)
        response = await self._asgi.handle_async_request(request)
        content = await response.aread()
        return httpx.Response(response.status_code, headers=response.headers, content=content)

    def _send(self, request: httpx.Request, body: bytes) -> concurrent.futures.Future:
        self.paths.append(request.url.path)
        work = self._serve(request.method, str(request.url), request.headers, body)
        return asyncio.run_coroutine_threadsafe(work, self._loop)

    def sync_transport(self) -> httpx.BaseTransport:
        server = self

        class Transport(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                return server._send(request, request.read()).result(timeout=30)

        return Transport()

    def async_transport(self) -> httpx.AsyncBaseTransport:
        server = self

        class Transport(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                body = await request.aread()
                return await asyncio.wrap_future(server._send(request, body))

        return Transport()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def server(backend: LocalBackend, config: AppConfig) -> Iterator[InProcessServer]:
    """The real routes over ``backend``, for the real clients; tasks finish on the 2nd poll."""
    backend.run_after_polls = 2
    served = InProcessServer(Routes(list(backend.endpoints.values()), backend, config).asgi_app())
    yield served
    served.close()
