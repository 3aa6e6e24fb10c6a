"""The HTTP tier: the real routes over the real task service, in process (no Ray).

``ServedBackend`` is :class:`~raytask.server.service.TaskService` itself (the class the task
manager actor wraps), plus what a Ray app has around it: sync calls run the model in
process, and queued tasks run through the real dispatcher with the real replica-side
runner, but only when a test calls :meth:`ServedBackend.drain` (or, with
``run_after_polls``, when a client has polled long enough), so every state can be observed.
``InProcessServer`` serves those routes to the real Python clients, sync and async.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from raytask.core.chunks import ChunkLog
from raytask.core.config import AppConfig
from raytask.core.dispatcher import EndpointRoute
from raytask.core.endpoint import discover
from raytask.core.errors import EndpointNotFoundError, HTTPError, TaskFailedError
from raytask.core.record import Result, approx_size
from raytask.core.state import TaskState
from raytask.core.status import TaskStatus
from raytask.server.routes import Routes
from raytask.server.runner import AttemptFailed, Streamed, run_attempt
from raytask.server.service import TaskService
from tests.apps import Demo

from ..support import FakeClock


class ServedBackend(TaskService):
    def __init__(self, config: AppConfig, clock: FakeClock, model: type | None = None) -> None:
        self.instance = (model or Demo.func_or_class)()
        cls = type(self.instance)
        self.endpoints = {e.name: e for e in discover(cls, cls.__name__, config.task_defaults)}
        routes = [
            EndpointRoute(e.name, e.method, e.deployment, e.options, 10_000, e.streams)
            for e in self.endpoints.values()
            if e.is_task
        ]
        super().__init__("local", routes, config, clock=clock)
        # With a number, a pending task's Nth status read runs the queue (as if the
        # replicas got to it meanwhile): the clients' waits then see tasks finish.
        self.run_after_polls: int | None = None
        self.neighbours: list[tuple[str, str]] = []
        self.polls: Counter[str] = Counter()
        self.waits = 0
        self.max_wait_s = 5.0  # the longest a long-poll really waits here (the fuzzer's: less)

    async def _polled(self, task_ids: list[str]) -> None:
        if not self.run_after_polls:
            return
        for task_id in task_ids:
            record = self.table._records.get(task_id)
            if record is not None and record.status is TaskStatus.PENDING:
                self.polls[task_id] += 1
                if self.polls[task_id] >= self.run_after_polls:
                    # A poll cut short (a long-poll's poller ends) leaves the run going.
                    await asyncio.shield(self.drain())

    async def status_many(
        self, task_ids: list[str], owner: str | None = None
    ) -> list[TaskState | HTTPError]:
        # Every status read (status, a long-poll's last read) comes here.
        await self._polled(task_ids)
        return await super().status_many(task_ids, owner)

    async def wait(
        self,
        task_id: str,
        wait_s: float,
        owner: str | None = None,
        endpoint: str | None = None,
    ) -> TaskState:
        """The service's long-poll, capped at ``max_wait_s``; meanwhile the task is polled
        every 10 ms (a poll, for ``run_after_polls``), as a client would."""
        self.waits += 1
        wait_s = min(wait_s, self.max_wait_s)

        async def poll() -> None:
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and not self.table.get(task_id).status.finished:
                await self.status(task_id)
                await asyncio.sleep(0.01)

        poller = asyncio.create_task(poll())
        try:
            return await super().wait(task_id, wait_s, owner, endpoint)
        finally:
            poller.cancel()

    async def call(self, endpoint: str, kwargs: dict[str, Any]) -> Any:
        if endpoint not in self.endpoints:
            raise EndpointNotFoundError(endpoint)
        value = await run_attempt(self.instance, self.endpoints[endpoint].method, kwargs)
        if isinstance(value, AttemptFailed):
            raise TaskFailedError(f"{endpoint} failed: {value.error}")
        return value

    async def call_stream(self, endpoint: str, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """A generator's chunks as it yields them (async ones; sync ones in one go)."""
        spec = self.endpoints[endpoint]
        bound = getattr(self.instance, spec.method)
        chunks = bound(**spec.to_call_kwargs(kwargs))
        if inspect.isasyncgen(chunks):
            async for chunk in chunks:
                yield chunk
        else:
            for chunk in chunks:
                yield chunk

    async def ready(self) -> bool:
        return True

    async def apps(self) -> list[tuple[str, str]]:
        return self.neighbours  # a test sets the apps a real Serve instance would list

    async def drain(self, limit: int | None = None) -> None:
        """Run pending tasks (every one, or the first ``limit``) to their end, through the
        real dispatcher, as replicas would."""
        while limit != 0:
            self.dispatcher.max_in_flight = limit
            started = self.dispatcher.take()
            self.dispatcher.max_in_flight = self.config.max_in_flight
            if not started:
                return
            for attempt, record, route in started:
                if route.streams:  # as Attempts does: chunks counted from 0, kept as they come
                    self.table.add_chunks(record.task_id, record.attempts, [])

                def emit(value: Any, record: Any = record) -> None:
                    self.table.add_chunks(record.task_id, record.attempts, [value])

                value = await run_attempt(self.instance, route.method, record.kwargs, None, emit)
                if isinstance(value, AttemptFailed):
                    self.dispatcher.raised(attempt, value.error)
                elif isinstance(value, Streamed):
                    log = record.chunks or ChunkLog(record.attempts)
                    self.dispatcher.succeed(attempt, Result(log, 0))
                else:
                    self.dispatcher.succeed(attempt, Result(value, approx_size(value)))
            limit = None if limit is None else limit - len(started)


@pytest.fixture
def config() -> AppConfig:
    return AppConfig(max_queue_size=3, max_request_bytes=4096, retry_after_s=2)


@pytest.fixture
def backend(config: AppConfig, clock: FakeClock) -> ServedBackend:
    return ServedBackend(config, clock)


@pytest.fixture
async def client(backend: ServedBackend, config: AppConfig) -> AsyncIterator[httpx.AsyncClient]:
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
def server(backend: ServedBackend, config: AppConfig) -> Iterator[InProcessServer]:
    """The real routes over ``backend``, for the real clients; tasks finish on the 2nd poll."""
    backend.run_after_polls = 2
    served = InProcessServer(Routes(list(backend.endpoints.values()), backend, config).asgi_app())
    yield served
    served.close()
