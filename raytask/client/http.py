"""``SyncHTTPClient`` and ``AsyncHTTPClient``: the same names, one logic (:mod:`.protocol`).

Endpoints are discovered from ``/schema.json`` on first use, so ``client.NAME(...)`` calls
a synchronous endpoint and ``client.NAME.submit(...)`` returns a task handle at once.
Batch helpers (``submit_many``, ``map``, ``as_completed``, ``wait``) bound their
concurrency and can show a tqdm progress bar.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

import httpx
from tqdm.auto import tqdm

from ..core.endpoint import MAX_BATCH
from ..core.errors import HTTPError, ServerUnreachableError
from ..core.state import TaskState
from . import polling, protocol
from .endpoints import AsyncEndpoint, SyncEndpoint
from .handles import AsyncTask, Task
from .protocol import RemoteEndpoint, Request
from .streaming import StreamEvents, aread_stream, read_stream

_USER_AGENT = "raytask-client/0.1"


TOKEN_ENV = "RAYTASK_API_TOKEN"


def _client_kwargs(
    url: str,
    timeout: float,
    transport: Any,
    headers: Mapping[str, str] | None,
    token: str | None,
) -> dict:
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return {
        "base_url": url,
        "timeout": timeout,
        "transport": transport,
        "headers": {"User-Agent": _USER_AGENT, **auth, **(headers or {})},
    }


_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout)
"""httpx's errors for a server that could not be reached at all (a read that times out or
breaks later stays httpx's own: the request may have been taken)."""


def _unreachable(request: httpx.Request, exc: Exception) -> ServerUnreachableError:
    url = str(request.url.copy_with(query=None))
    return ServerUnreachableError(
        f"cannot reach the raytask server at {url} ({type(exc).__name__}: {exc}); is it "
        "running, and is this its URL?",
        url=url,
    )


def _build(http: httpx.Client | httpx.AsyncClient, request: Request) -> httpx.Request:
    timeout: Any = httpx.USE_CLIENT_DEFAULT
    if request.hold_s:  # a long-poll: the client's timeout counts after the server's hold
        base = http.timeout.read or 30.0
        timeout = httpx.Timeout(http.timeout.connect, read=base + request.hold_s)
    built = http.build_request(
        request.method,
        request.path,
        params=request.params,
        json=request.json,
        headers=request.headers,
        timeout=timeout,
        files=request.files,
        data=request.data,
    )
    if request.absolute:
        built.url = built.url.copy_with(path=request.path)
    return built


def _show(bar: tqdm, done: int, polled: list[Any], finished: list[bool]) -> None:
    """Finished tasks, plus the fractions the running ones last reported."""
    if bar.disable:
        return
    partial = sum(
        (t.progress.fraction or 0.0)
        for t, fin in zip(polled, finished, strict=True)
        if not fin and t.progress is not None
    )
    bar.n = round(done + partial, 2)
    bar.refresh()


def _results(tasks: list[Any], outcomes: dict[Any, Any], return_exceptions: bool) -> list[Any]:
    results = [outcomes[t] for t in tasks]
    if not return_exceptions:
        for result in results:
            if isinstance(result, BaseException):
                raise result
    return results


class SyncHTTPClient:
    """A blocking client for a raytask app.

    Args:
        url: the app's base URL, e.g. ``"http://localhost:8000"``.
        timeout: seconds for each HTTP request.
        transport: an httpx transport (tests pass ``httpx.MockTransport``).
        headers: extra headers for every request.
        token: the app's API token, sent as ``Authorization: Bearer <token>`` (default:
            the ``RAYTASK_API_TOKEN`` environment variable, if set).
        max_retries: how often a request answered 429 (queue full) or 503 (task manager
            unreachable) is sent again, after the answer's ``Retry-After``.

    Example::

        with raytask.SyncHTTPClient("http://localhost:8000") as client:
            task = client.generate.submit(prompt="a mountain")
            image = task.get(timeout=60)
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        max_retries: int = 3,
        token: str | None = None,
    ) -> None:
        self._http = httpx.Client(**_client_kwargs(url, timeout, transport, headers, token))
        self._endpoints: dict[str, RemoteEndpoint] | None = None
        self._discovery = threading.Lock()  # concurrent first calls fetch the schema once
        self._max_retries = max_retries

    # -- plumbing --------------------------------------------------------------

    def _send(self, request: Request) -> httpx.Response:
        retries = 0
        while True:
            built = _build(self._http, request)
            try:
                response = self._http.send(built)
            except _UNREACHABLE as exc:
                raise _unreachable(built, exc) from None
            delay = protocol.retry_delay(
                response.status_code,
                response.headers.get("retry-after"),
                retries,
                self._max_retries,
            )
            if delay is None:
                return response
            retries += 1
            time.sleep(delay)

    def _stream(
        self, request_for: Callable[[int, int], Request], reader: StreamEvents
    ) -> Iterator[Any]:
        return read_stream(self._http, lambda r: _build(self._http, r), request_for, reader)

    def _endpoint(self, name: str, task: bool = False) -> RemoteEndpoint:
        if self._endpoints is None:
            with self._discovery:
                if self._endpoints is None:
                    response = self._send(protocol.SCHEMA)
                    self._endpoints = protocol.parse_schema(response.status_code, response.content)
        return protocol.lookup(self._endpoints, name, task)

    def _result(self, request: Request) -> Any:
        response = self._send(request)
        return protocol.decode_result(
            response.status_code, response.headers.get("content-type", ""), response.content
        )

    def _task_state(self, request: Request) -> TaskState:
        response = self._send(request)
        return protocol.decode_state(response.status_code, response.content)

    def _queued(self, request: Request) -> list[str]:
        response = self._send(request)
        return protocol.decode_queued(response.status_code, response.content)

    def _page(self, request: Request) -> tuple[list[TaskState], str | None]:
        response = self._send(request)
        return protocol.decode_page(response.status_code, response.content)

    def _cancelled(self, request: Request) -> int:
        response = self._send(request)
        return protocol.decode_cancelled(response.status_code, response.content)

    def status_many(self, task_ids: Iterable[str]) -> list[TaskState | HTTPError]:
        """The states of several tasks in one request per 1,000, in order; an unknown or
        expired one gets its error (an exception object) in its place."""
        ids = list(task_ids)
        answers: list[TaskState | HTTPError] = []
        for i in range(0, len(ids), MAX_BATCH):
            response = self._send(protocol.status_many(ids[i : i + MAX_BATCH]))
            answers += protocol.decode_status_many(response.status_code, response.content)
        return answers

    def usage(self, **query: Any) -> list[dict[str, Any]]:
        """``GET /usage``: finished tasks, run, GPU and queue seconds per tenant, endpoint
        and hour. ``query``: ``tenant``, ``endpoint``, ``since`` / ``until`` (datetimes or
        ISO-8601), ``group_by`` (keys to keep, the others summed over). With token
        isolation, only this token's tenant."""
        response = self._send(protocol.usage(**query))
        return protocol.decode_usage(response.status_code, response.content)

    def __getattr__(self, name: str) -> SyncEndpoint:
        if name.startswith("_"):
            raise AttributeError(name)
        return SyncEndpoint(self, name)

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> SyncHTTPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- batches ---------------------------------------------------------------

    def as_completed(
        self,
        tasks: Iterable[Task],
        timeout: float | None = None,
        progress: bool = False,
        concurrency: int = 16,
    ) -> Iterator[Task]:
        """Yield the tasks as they finish (any final status).

        Their states are read with ``POST /status_many`` (one request per 1,000 tasks a
        round; ``concurrency`` is no longer used), which also keeps each handle's
        :attr:`~raytask.Task.progress` fresh; between rounds that found nothing new, a
        long-poll on the oldest pending task waits for the next to finish.

        Raises:
            WaitTimeoutError: some had not finished within ``timeout`` seconds.
        """
        polling.refuse_inside_event_loop("as_completed()", "AsyncHTTPClient.as_completed")
        poller = polling.Poller(list(tasks), timeout, window=MAX_BATCH)
        with tqdm(total=len(poller.pending), disable=not progress, desc="tasks") as bar:
            done = 0
            while True:
                polled = poller.batch()
                answers = self.status_many([t.id for t in polled])
                finished = [t._seen(answer) for t, answer in zip(polled, answers, strict=True)]
                for task, fin in zip(polled, finished, strict=True):
                    if fin:
                        done += 1
                        yield task
                _show(bar, done, polled, finished)
                delay = poller.update(polled, finished)
                if delay is None:
                    return
                if delay:  # nothing new: hold until the oldest pending task finishes
                    poller.pending[0]._hold(max(delay, polling.MAX_POLL_S))

    def wait(
        self,
        tasks: Iterable[Task],
        timeout: float | None = None,
        progress: bool = False,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Wait for all ``tasks``; return their results in order.

        Args:
            return_exceptions: put a failed task's error in its place instead of raising it.
        """
        tasks = list(tasks)
        outcomes: dict[Task, Any] = {}
        for task in self.as_completed(tasks, timeout, progress):
            try:
                outcomes[task] = task.get()
            except Exception as exc:
                outcomes[task] = exc
        return _results(tasks, outcomes, return_exceptions)


class AsyncHTTPClient:
    """An asyncio client for a raytask app, with the names of :class:`SyncHTTPClient`.

    Example::

        async with raytask.AsyncHTTPClient("http://localhost:8000") as client:
            task = await client.generate.submit(prompt="a mountain")
            image = await task.get(timeout=60)
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        max_retries: int = 3,
        token: str | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(**_client_kwargs(url, timeout, transport, headers, token))
        self._endpoints: dict[str, RemoteEndpoint] | None = None
        self._discovery: asyncio.Lock | None = None  # made in the loop that first needs it
        self._max_retries = max_retries

    async def _send(self, request: Request) -> httpx.Response:
        retries = 0
        while True:
            built = _build(self._http, request)
            try:
                response = await self._http.send(built)
            except _UNREACHABLE as exc:
                raise _unreachable(built, exc) from None
            delay = protocol.retry_delay(
                response.status_code,
                response.headers.get("retry-after"),
                retries,
                self._max_retries,
            )
            if delay is None:
                return response
            retries += 1
            await asyncio.sleep(delay)

    def _stream(
        self, request_for: Callable[[int, int], Request], reader: StreamEvents
    ) -> AsyncIterator[Any]:
        return aread_stream(self._http, lambda r: _build(self._http, r), request_for, reader)

    async def _endpoint(self, name: str, task: bool = False) -> RemoteEndpoint:
        if self._endpoints is None:
            self._discovery = self._discovery or asyncio.Lock()
            async with self._discovery:  # concurrent first calls fetch the schema once
                if self._endpoints is None:
                    response = await self._send(protocol.SCHEMA)
                    self._endpoints = protocol.parse_schema(response.status_code, response.content)
        return protocol.lookup(self._endpoints, name, task)

    async def _result(self, request: Request) -> Any:
        response = await self._send(request)
        return protocol.decode_result(
            response.status_code, response.headers.get("content-type", ""), response.content
        )

    async def _task_state(self, request: Request) -> TaskState:
        response = await self._send(request)
        return protocol.decode_state(response.status_code, response.content)

    async def _queued(self, request: Request) -> list[str]:
        response = await self._send(request)
        return protocol.decode_queued(response.status_code, response.content)

    async def _page(self, request: Request) -> tuple[list[TaskState], str | None]:
        response = await self._send(request)
        return protocol.decode_page(response.status_code, response.content)

    async def _cancelled(self, request: Request) -> int:
        response = await self._send(request)
        return protocol.decode_cancelled(response.status_code, response.content)

    async def status_many(self, task_ids: Iterable[str]) -> list[TaskState | HTTPError]:
        """The states of several tasks (see :meth:`SyncHTTPClient.status_many`)."""
        ids = list(task_ids)
        answers: list[TaskState | HTTPError] = []
        for i in range(0, len(ids), MAX_BATCH):
            response = await self._send(protocol.status_many(ids[i : i + MAX_BATCH]))
            answers += protocol.decode_status_many(response.status_code, response.content)
        return answers

    async def usage(self, **query: Any) -> list[dict[str, Any]]:
        """``GET /usage`` (see :meth:`SyncHTTPClient.usage`)."""
        response = await self._send(protocol.usage(**query))
        return protocol.decode_usage(response.status_code, response.content)

    def __getattr__(self, name: str) -> AsyncEndpoint:
        if name.startswith("_"):
            raise AttributeError(name)
        return AsyncEndpoint(self, name)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncHTTPClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def as_completed(
        self,
        tasks: Iterable[AsyncTask],
        timeout: float | None = None,
        progress: bool = False,
        concurrency: int = 16,
    ) -> AsyncIterator[AsyncTask]:
        """Yield the tasks as they finish (any final status).

        Raises:
            WaitTimeoutError: some had not finished within ``timeout`` seconds.
        """
        poller = polling.Poller(list(tasks), timeout, window=MAX_BATCH)
        with tqdm(total=len(poller.pending), disable=not progress, desc="tasks") as bar:
            done = 0
            while True:
                polled = poller.batch()
                answers = await self.status_many([t.id for t in polled])
                finished = [t._seen(answer) for t, answer in zip(polled, answers, strict=True)]
                for task, fin in zip(polled, finished, strict=True):
                    if fin:
                        done += 1
                        yield task
                _show(bar, done, polled, finished)
                delay = poller.update(polled, finished)
                if delay is None:
                    return
                if delay:  # nothing new: hold until the oldest pending task finishes
                    await poller.pending[0]._hold(max(delay, polling.MAX_POLL_S))

    async def wait(
        self,
        tasks: Iterable[AsyncTask],
        timeout: float | None = None,
        progress: bool = False,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Wait for all ``tasks``; return their results in order (see :meth:`SyncHTTPClient.wait`)."""
        tasks = list(tasks)
        outcomes: dict[AsyncTask, Any] = {}
        async for task in self.as_completed(tasks, timeout, progress):
            try:
                outcomes[task] = await task.get()
            except Exception as exc:
                outcomes[task] = exc
        return _results(tasks, outcomes, return_exceptions)
