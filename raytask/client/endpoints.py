"""``client.NAME`` of the HTTP clients, and the task backends their handles use.

:class:`SyncEndpoint` and :class:`AsyncEndpoint` expose the same names: call the endpoint,
``submit`` a task, rebuild a handle from an id with ``task``, and the batch helpers. Each
task handle they return talks to the server through a small per-endpoint backend
(:class:`~raytask.client.handles.TaskBackend`), not through the client's internals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from ..core.state import TaskState
from .handles import AsyncTask, Task
from .protocol import RemoteEndpoint

if TYPE_CHECKING:
    from .http import AsyncHTTPClient, SyncHTTPClient


class _HTTPTasks:
    """The :class:`~raytask.client.handles.TaskBackend` of one endpoint over HTTP."""

    def __init__(self, client: SyncHTTPClient, endpoint: RemoteEndpoint) -> None:
        self._client, self._endpoint = client, endpoint

    def status(self, task_id: str) -> TaskState:
        return self._client._task_state(self._endpoint.status(task_id))

    def result(self, task_id: str) -> Any:
        return self._client._result(self._endpoint.get(task_id))

    def cancel(self, task_id: str) -> TaskState:
        return self._client._task_state(self._endpoint.cancel(task_id))

    def retry(self, task_id: str) -> TaskState:
        return self._client._task_state(self._endpoint.retry(task_id))


class _AsyncHTTPTasks:
    """The :class:`~raytask.client.handles.AsyncTaskBackend` of one endpoint over HTTP."""

    def __init__(self, client: AsyncHTTPClient, endpoint: RemoteEndpoint) -> None:
        self._client, self._endpoint = client, endpoint

    async def status(self, task_id: str) -> TaskState:
        return await self._client._task_state(self._endpoint.status(task_id))

    async def result(self, task_id: str) -> Any:
        return await self._client._result(self._endpoint.get(task_id))

    async def cancel(self, task_id: str) -> TaskState:
        return await self._client._task_state(self._endpoint.cancel(task_id))

    async def retry(self, task_id: str) -> TaskState:
        return await self._client._task_state(self._endpoint.retry(task_id))


class SyncEndpoint:
    """``client.NAME``: call it for a synchronous result, or ``.submit`` a task."""

    def __init__(self, client: SyncHTTPClient, name: str) -> None:
        self._client, self._name = client, name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the endpoint synchronously (``POST /NAME``) and return the result."""
        endpoint = self._client._endpoint(self._name)
        return self._client._result(endpoint.call(endpoint.bind(args, kwargs)))

    def submit(self, *args: Any, **kwargs: Any) -> Task:
        """Submit a task with these arguments; returns its handle at once."""
        endpoint = self._client._endpoint(self._name, task=True)
        state = self._client._task_state(endpoint.submit(endpoint.bind(args, kwargs)))
        return Task(_HTTPTasks(self._client, endpoint), state.task_id, endpoint.name)

    def task(self, task_id: str) -> Task:
        """The handle of a task submitted earlier (for example by another process)."""
        endpoint = self._client._endpoint(self._name, task=True)
        return Task(_HTTPTasks(self._client, endpoint), task_id, endpoint.name)

    def submit_many(
        self, inputs: Iterable[Mapping[str, Any]], concurrency: int = 16, progress: bool = False
    ) -> list[Task]:
        """Submit one task per input (a dict of keyword arguments), ``concurrency`` at a time."""
        inputs = list(inputs)
        with tqdm(total=len(inputs), disable=not progress, desc=f"submit {self._name}") as bar:

            def one(kwargs: Mapping[str, Any]) -> Task:
                task = self.submit(**kwargs)
                bar.update()
                return task

            with ThreadPoolExecutor(concurrency) as pool:
                return list(pool.map(one, inputs))

    def map(
        self,
        inputs: Iterable[Mapping[str, Any]],
        concurrency: int = 16,
        timeout: float | None = None,
        progress: bool = False,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Submit every input as a task and return all results, in input order."""
        tasks = self.submit_many(inputs, concurrency, progress)
        return self._client.wait(tasks, timeout, progress, return_exceptions)


class AsyncEndpoint:
    """``client.NAME`` of an :class:`AsyncHTTPClient`: await a call, or ``.submit`` a task."""

    def __init__(self, client: AsyncHTTPClient, name: str) -> None:
        self._client, self._name = client, name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r})"

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the endpoint synchronously (``POST /NAME``) and return the result."""
        endpoint = await self._client._endpoint(self._name)
        return await self._client._result(endpoint.call(endpoint.bind(args, kwargs)))

    async def submit(self, *args: Any, **kwargs: Any) -> AsyncTask:
        """Submit a task with these arguments; returns its handle at once."""
        endpoint = await self._client._endpoint(self._name, task=True)
        state = await self._client._task_state(endpoint.submit(endpoint.bind(args, kwargs)))
        return AsyncTask(_AsyncHTTPTasks(self._client, endpoint), state.task_id, endpoint.name)

    async def task(self, task_id: str) -> AsyncTask:
        """The handle of a task submitted earlier (for example by another process)."""
        endpoint = await self._client._endpoint(self._name, task=True)
        return AsyncTask(_AsyncHTTPTasks(self._client, endpoint), task_id, endpoint.name)

    async def submit_many(
        self, inputs: Iterable[Mapping[str, Any]], concurrency: int = 16, progress: bool = False
    ) -> list[AsyncTask]:
        """Submit one task per input (a dict of keyword arguments), ``concurrency`` at a time."""
        inputs = list(inputs)
        limit = asyncio.Semaphore(concurrency)
        with tqdm(total=len(inputs), disable=not progress, desc=f"submit {self._name}") as bar:

            async def one(kwargs: Mapping[str, Any]) -> AsyncTask:
                async with limit:
                    task = await self.submit(**kwargs)
                bar.update()
                return task

            return list(await asyncio.gather(*(one(kwargs) for kwargs in inputs)))

    async def map(
        self,
        inputs: Iterable[Mapping[str, Any]],
        concurrency: int = 16,
        timeout: float | None = None,
        progress: bool = False,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Submit every input as a task and return all results, in input order."""
        tasks = await self.submit_many(inputs, concurrency, progress)
        return await self._client.wait(tasks, timeout, progress, return_exceptions)
