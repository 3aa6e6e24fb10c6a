"""``client.NAME`` of the HTTP clients, and the task backends their handles use.

:class:`SyncEndpoint` and :class:`AsyncEndpoint` expose the same names: call the endpoint,
``submit`` a task, rebuild a handle from an id with ``task``, and the batch helpers. Each
task handle they return talks to the server through a small per-endpoint backend
(:class:`~raytask.client.handles.TaskBackend`), not through the client's internals.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, Self

from tqdm.auto import tqdm

from ..core.bodies import DeleteManyAnswer
from ..core.endpoint import MAX_BATCH
from ..core.state import TaskState
from ..core.wire import DEFAULT_LIST_LIMIT
from .handles import AsyncTask, Task
from .jobs import AsyncHTTPJobs, AsyncJob, HTTPJobs, Job, request_lines
from .protocol import (
    DEFAULT_SUBMISSION,
    Page,
    RemoteEndpoint,
    Submission,
    WithOptions,
    async_pages,
    decode_deleted,
    pages,
    statuses_of,
)
from .streaming import StreamEvents

if TYPE_CHECKING:
    from .http import AsyncHTTPClient, SyncHTTPClient


class _HTTPTasks:
    """The :class:`~raytask.client.handles.TaskBackend` of one endpoint over HTTP."""

    def __init__(self, client: SyncHTTPClient, endpoint: RemoteEndpoint) -> None:
        self._client, self._endpoint = client, endpoint

    def status(self, task_id: str, wait_s: float | None = None) -> TaskState:
        return self._client._task_state(self._endpoint.status(task_id, wait_s))

    def result(self, task_id: str, wait_s: float | None = None) -> Any:
        return self._client._result(self._endpoint.get(task_id, wait_s))

    def stream(self, task_id: str, reader: StreamEvents) -> Iterator[Any]:
        return self._client._stream(partial(self._endpoint.stream, task_id), reader)

    def cancel(self, task_id: str) -> TaskState:
        return self._client._task_state(self._endpoint.cancel(task_id))

    def retry(self, task_id: str) -> TaskState:
        return self._client._task_state(self._endpoint.retry(task_id))


class _AsyncHTTPTasks:
    """The :class:`~raytask.client.handles.AsyncTaskBackend` of one endpoint over HTTP."""

    def __init__(self, client: AsyncHTTPClient, endpoint: RemoteEndpoint) -> None:
        self._client, self._endpoint = client, endpoint

    async def status(self, task_id: str, wait_s: float | None = None) -> TaskState:
        return await self._client._task_state(self._endpoint.status(task_id, wait_s))

    async def result(self, task_id: str, wait_s: float | None = None) -> Any:
        return await self._client._result(self._endpoint.get(task_id, wait_s))

    def stream(self, task_id: str, reader: StreamEvents) -> AsyncIterator[Any]:
        return self._client._stream(partial(self._endpoint.stream, task_id), reader)

    async def cancel(self, task_id: str) -> TaskState:
        return await self._client._task_state(self._endpoint.cancel(task_id))

    async def retry(self, task_id: str) -> TaskState:
        return await self._client._task_state(self._endpoint.retry(task_id))


def _prefix(endpoint: RemoteEndpoint) -> str:
    """The app's route prefix (the ``/v1`` routes of batch jobs are under it)."""
    return endpoint.route.removesuffix(f"/{endpoint.name}")


def _chunks(bodies: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [bodies[i : i + MAX_BATCH] for i in range(0, len(bodies), MAX_BATCH)]


def _queued_or_error(outcomes: list[list[str] | BaseException]) -> tuple[list[str], Any]:
    """The ids the requests of one ``submit_many`` queued, and the first error of one that
    failed (None if none did)."""
    ids = [i for outcome in outcomes if not isinstance(outcome, BaseException) for i in outcome]
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    return ids, errors[0] if errors else None


class SyncEndpoint(WithOptions):
    """``client.NAME``: call it for a synchronous result, ``.submit`` a task, or set
    per-submit ``.options(...)`` first."""

    def __init__(
        self, client: SyncHTTPClient, name: str, settings: Submission = DEFAULT_SUBMISSION
    ) -> None:
        self._client, self._name, self._settings = client, name, settings

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r})"

    def _with_settings(self, settings: Submission) -> Self:
        return type(self)(self._client, self._name, settings)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the endpoint synchronously (``POST /NAME``) and return the result."""
        endpoint = self._client._endpoint(self._name)
        return self._client._result(endpoint.call(endpoint.bind(args, kwargs)))

    def submit(self, *args: Any, **kwargs: Any) -> Task:
        """Submit a task with these arguments; returns its handle at once."""
        endpoint = self._client._endpoint(self._name, task=True)
        request = endpoint.submit(endpoint.bind(args, kwargs), self._settings)
        state = self._client._task_state(request)
        return Task(_HTTPTasks(self._client, endpoint), state.task_id, endpoint.name)

    def task(self, task_id: str) -> Task:
        """The handle of a task submitted earlier (for example by another process)."""
        endpoint = self._client._endpoint(self._name, task=True)
        return Task(_HTTPTasks(self._client, endpoint), task_id, endpoint.name)

    def submit_many(
        self, inputs: Iterable[Mapping[str, Any]], concurrency: int = 4, progress: bool = False
    ) -> list[Task]:
        """Submit one task per input (a dict of keyword arguments) with ``POST
        /NAME/submit_many``, 1,000 a request, ``concurrency`` requests at a time.

        All or none: each request queues all its tasks or none, and when one request
        fails, the tasks the others queued are cancelled before its error is raised.
        Returns the handles in input order.

        Raises:
            InvalidInputError: inputs failed validation (none queued).
            QueueFullError: they did not fit in the queue (none queued).
        """
        endpoint = self._client._endpoint(self._name, task=True)
        bodies = [endpoint.bind((), dict(kwargs)) for kwargs in inputs]
        tasks = _HTTPTasks(self._client, endpoint)
        with tqdm(total=len(bodies), disable=not progress, desc=f"submit {self._name}") as bar:

            def one(chunk: list[dict[str, Any]]) -> list[str]:
                ids = self._client._queued(endpoint.submit_many(chunk, self._settings))
                bar.update(len(ids))
                return ids

            def outcome(chunk: list[dict[str, Any]]) -> list[str] | BaseException:
                try:
                    return one(chunk)
                except Exception as exc:
                    return exc

            with ThreadPoolExecutor(max(1, concurrency)) as pool:
                ids, error = _queued_or_error(list(pool.map(outcome, _chunks(bodies))))
        if error is not None:
            for chunk in range(0, len(ids), MAX_BATCH):  # none kept
                self._client._cancelled(endpoint.cancel_many(ids[chunk : chunk + MAX_BATCH], None))
            raise error
        return [Task(tasks, task_id, endpoint.name) for task_id in ids]

    def batch(self, inputs: Iterable[Mapping[str, Any]], priority: int = -1) -> Job:
        """Run one task per input as a batch job (SPEC 11): the inputs go up as one JSONL
        file (``custom_id``: each input's index) and the server feeds them to the
        endpoint ``batch_window`` at a time, at ``priority`` (-1: below interactive tasks).
        Returns the job's handle: ``.wait(progress=True)``, then ``.results()``."""
        endpoint = self._client._endpoint(self._name, task=True)
        url, jobs = f"/{endpoint.name}", HTTPJobs(self._client._send, _prefix(endpoint))
        data = request_lines(url, (endpoint.bind((), dict(kwargs)) for kwargs in inputs))
        return Job(jobs, jobs.start(data, url, priority))

    def map(
        self,
        inputs: Iterable[Mapping[str, Any]],
        concurrency: int = 16,
        timeout: float | None = None,
        progress: bool = False,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Submit every input as a task and return all results, in input order.

        With ``progress``, a bar counts finished tasks, plus the fractions that running
        tasks report (``raytask.report_progress``).
        """
        tasks = self.submit_many(inputs, progress=progress)
        return self._client.wait(tasks, timeout, progress, return_exceptions)

    def list(
        self, status: str | Iterable[str] | None = None, limit: int = DEFAULT_LIST_LIMIT
    ) -> Iterator[TaskState]:
        """This endpoint's tasks, newest first, fetched ``limit`` a page as you iterate.

        Args:
            status: only tasks in this state (or these states).
        """
        endpoint = self._client._endpoint(self._name, task=True)
        statuses = statuses_of(status)
        return pages(lambda cursor: self._client._page(endpoint.list(statuses, limit, cursor)))

    def cancel_many(self, task_ids: Iterable[str] | None = None, status: str | None = None) -> int:
        """Cancel these tasks of the endpoint, or every one in ``status`` (``"pending"``
        purges the queue); returns how many were cancelled."""
        endpoint = self._client._endpoint(self._name, task=True)
        ids = None if task_ids is None else list(task_ids)
        return self._client._cancelled(endpoint.cancel_many(ids, status))

    def delete_many(
        self,
        task_ids: Iterable[str] | None = None,
        status: str | None = None,
        older_than_s: float | None = None,
    ) -> DeleteManyAnswer:
        """Delete finished tasks of the endpoint and free their results: these ids, or
        every task that finished in ``status`` (``"success"``, ``"failure"``,
        ``"cancelled"``) at least ``older_than_s`` seconds ago. Unfinished and unknown ids
        are skipped. Returns ``.deleted`` and ``.skipped``; a deleted id then answers
        :class:`~raytask.TaskNotFoundError`."""
        endpoint = self._client._endpoint(self._name, task=True)
        ids = None if task_ids is None else list(task_ids)
        response = self._client._send(endpoint.delete_many(ids, status, older_than_s))
        return decode_deleted(response.status_code, response.content)


class AsyncEndpoint(WithOptions):
    """``client.NAME`` of an :class:`AsyncHTTPClient`: await a call, or ``.submit`` a task."""

    def __init__(
        self, client: AsyncHTTPClient, name: str, settings: Submission = DEFAULT_SUBMISSION
    ) -> None:
        self._client, self._name, self._settings = client, name, settings

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r})"

    def _with_settings(self, settings: Submission) -> Self:
        return type(self)(self._client, self._name, settings)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the endpoint synchronously (``POST /NAME``) and return the result."""
        endpoint = await self._client._endpoint(self._name)
        return await self._client._result(endpoint.call(endpoint.bind(args, kwargs)))

    async def submit(self, *args: Any, **kwargs: Any) -> AsyncTask:
        """Submit a task with these arguments; returns its handle at once."""
        endpoint = await self._client._endpoint(self._name, task=True)
        request = endpoint.submit(endpoint.bind(args, kwargs), self._settings)
        state = await self._client._task_state(request)
        return AsyncTask(_AsyncHTTPTasks(self._client, endpoint), state.task_id, endpoint.name)

    async def task(self, task_id: str) -> AsyncTask:
        """The handle of a task submitted earlier (for example by another process)."""
        endpoint = await self._client._endpoint(self._name, task=True)
        return AsyncTask(_AsyncHTTPTasks(self._client, endpoint), task_id, endpoint.name)

    async def submit_many(
        self, inputs: Iterable[Mapping[str, Any]], concurrency: int = 4, progress: bool = False
    ) -> list[AsyncTask]:
        """Submit one task per input (see :meth:`SyncEndpoint.submit_many`)."""
        endpoint = await self._client._endpoint(self._name, task=True)
        bodies = [endpoint.bind((), dict(kwargs)) for kwargs in inputs]
        tasks = _AsyncHTTPTasks(self._client, endpoint)
        limit = asyncio.Semaphore(max(1, concurrency))
        with tqdm(total=len(bodies), disable=not progress, desc=f"submit {self._name}") as bar:

            async def one(chunk: list[dict[str, Any]]) -> list[str]:
                async with limit:
                    ids = await self._client._queued(endpoint.submit_many(chunk, self._settings))
                bar.update(len(ids))
                return ids

            outcomes = await asyncio.gather(
                *(one(chunk) for chunk in _chunks(bodies)), return_exceptions=True
            )
        ids, error = _queued_or_error(outcomes)
        if error is not None:
            for chunk in range(0, len(ids), MAX_BATCH):  # none kept
                ids_ = ids[chunk : chunk + MAX_BATCH]
                await self._client._cancelled(endpoint.cancel_many(ids_, None))
            raise error
        return [AsyncTask(tasks, task_id, endpoint.name) for task_id in ids]

    async def batch(self, inputs: Iterable[Mapping[str, Any]], priority: int = -1) -> AsyncJob:
        """Run one task per input as a batch job (see :meth:`SyncEndpoint.batch`)."""
        endpoint = await self._client._endpoint(self._name, task=True)
        url, jobs = f"/{endpoint.name}", AsyncHTTPJobs(self._client._send, _prefix(endpoint))
        data = request_lines(url, (endpoint.bind((), dict(kwargs)) for kwargs in inputs))
        return AsyncJob(jobs, await jobs.start(data, url, priority))

    async def map(
        self,
        inputs: Iterable[Mapping[str, Any]],
        concurrency: int = 16,
        timeout: float | None = None,
        progress: bool = False,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Submit every input as a task and return all results, in input order."""
        tasks = await self.submit_many(inputs, progress=progress)
        return await self._client.wait(tasks, timeout, progress, return_exceptions)

    async def list(
        self, status: str | Iterable[str] | None = None, limit: int = DEFAULT_LIST_LIMIT
    ) -> AsyncIterator[TaskState]:
        """This endpoint's tasks, newest first (see :meth:`SyncEndpoint.list`)."""
        endpoint = await self._client._endpoint(self._name, task=True)
        statuses = statuses_of(status)

        async def fetch(cursor: str | None) -> Page:
            return await self._client._page(endpoint.list(statuses, limit, cursor))

        async for state in async_pages(fetch):
            yield state

    async def cancel_many(
        self, task_ids: Iterable[str] | None = None, status: str | None = None
    ) -> int:
        """Cancel these tasks, or every one in ``status`` (see :meth:`SyncEndpoint.cancel_many`)."""
        endpoint = await self._client._endpoint(self._name, task=True)
        ids = None if task_ids is None else list(task_ids)
        return await self._client._cancelled(endpoint.cancel_many(ids, status))

    async def delete_many(
        self,
        task_ids: Iterable[str] | None = None,
        status: str | None = None,
        older_than_s: float | None = None,
    ) -> DeleteManyAnswer:
        """Delete finished tasks (see :meth:`SyncEndpoint.delete_many`)."""
        endpoint = await self._client._endpoint(self._name, task=True)
        ids = None if task_ids is None else list(task_ids)
        response = await self._client._send(endpoint.delete_many(ids, status, older_than_s))
        return decode_deleted(response.status_code, response.content)
