"""The in-cluster clients: submit and follow tasks over Ray actor calls, without HTTP.

For Ray drivers and for other deployments of the cluster. They find the app's task manager
by name, validate inputs locally with the same models as the ingress, and ``get`` returns
the method's Python return value straight from the object store (no HTTP encoding).

:class:`ClusterClient` blocks (for drivers and scripts); :class:`AsyncClusterClient` never
blocks its event loop (for deployments and async code) and is made with
``await raytask.get_async_client(app_name)``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, Self

import ray

from ..core.batching import Coalescer
from ..core.bodies import DeleteManyAnswer, DeleteManyRequest
from ..core.endpoint import Endpoint, discover
from ..core.errors import EndpointNotFoundError, ServiceUnavailableError, unwrap
from ..core.messages import Submit
from ..core.names import NAMESPACE, manager_name
from ..core.queue import ANONYMOUS
from ..core.state import TaskState
from ..core.tokens import check_name
from ..core.wire import DEFAULT_LIST_LIMIT
from .handles import AsyncTask, Task
from .jobs import AsyncJob, Job, request_lines
from .manager_calls import (
    AsyncManagerJobs,
    AsyncManagerTasks,
    ManagerJobs,
    ManagerTasks,
)
from .manager_calls import ask as _ask
from .protocol import (
    DEFAULT_SUBMISSION,
    Page,
    RemoteEndpoint,
    Submission,
    WithOptions,
    async_pages,
    pages,
    statuses_of,
)


class ClusterTask(Task):
    """A task handle over Ray (blocking), with the names of :class:`raytask.Task`."""

    _async_alternative = "raytask.get_async_client(...) and `await task.wait()`"


class AsyncClusterTask(AsyncTask):
    """A task handle over Ray for async code, with the names of :class:`raytask.AsyncTask`."""


def _connect() -> None:
    """Join the running cluster (``RAY_ADDRESS``, or the one this machine started last).

    Never starts one: a new local Ray would hold no raytask app (``ray.get_actor`` alone
    would start one and then report the app missing).
    """
    if ray.is_initialized():
        return
    try:
        ray.init(address=os.environ.get("RAY_ADDRESS") or "auto", log_to_driver=False)
    except ConnectionError as exc:
        raise ConnectionError(
            "no running Ray cluster found to join: start the app first (make run, or serve "
            "run CONFIG), or call ray.init(address=...) before get_client to join another "
            f"machine's cluster ({exc})"
        ) from None


def _models(manager: Any, app_name: str, tries: int = 3) -> list[tuple[str, type]]:
    """The app's models, asked up to ``tries`` times (a read: safe to ask again, and a
    driver that just joined a busy cluster may see its first call go unanswered)."""
    for attempt in range(1, tries + 1):
        try:
            return _ask(manager.models.remote())
        except ServiceUnavailableError as exc:
            if attempt == tries:
                raise ServiceUnavailableError(
                    f"no answer from the task manager of {app_name!r} in {tries} tries: {exc}"
                ) from None
    raise AssertionError("unreachable")


def _find_manager(app_name: str) -> Any:
    _connect()
    try:
        return ray.get_actor(manager_name(app_name), namespace=NAMESPACE)
    except ValueError:
        raise EndpointNotFoundError(
            f"no raytask app named {app_name!r} is running in the Ray cluster at "
            f"{ray.get_runtime_context().gcs_address} (the app's name is its Serve "
            "application name: `name:` in the YAML)"
        ) from None


def _task_endpoints(models: list[tuple[str, type]]) -> dict[str, Endpoint]:
    return {e.name: e for name, cls in models for e in discover(cls, name) if e.is_task}


class _Endpoint(WithOptions):
    """What both cluster endpoints share: binding and validating a call locally."""

    def __init__(
        self, client: Any, endpoint: Endpoint, settings: Submission = DEFAULT_SUBMISSION
    ) -> None:
        self._client, self._endpoint, self._settings = client, endpoint, settings
        self._binder = RemoteEndpoint.from_route(endpoint.route_info())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._endpoint.name!r})"

    def _with_settings(self, settings: Submission) -> Self:
        return type(self)(self._client, self._endpoint, settings)

    def _item(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Submit:
        stored = self._endpoint.validate(self._binder.bind(args, kwargs))
        settings = self._settings
        key, tenant = settings.idempotency_key, self._client.tenant
        return Submit(self._endpoint.name, stored, settings.options, key, None, tenant)

    def _list_call(self, statuses: list[str] | None, limit: int, cursor: int | None) -> Any:
        return self._client._manager.list_tasks.remote(self._endpoint.name, statuses, limit, cursor)

    def _cancel_call(self, task_ids: Iterable[str] | None, status: str | None) -> Any:
        ids = None if task_ids is None else list(task_ids)
        statuses = None if status is None else [status]
        return self._client._manager.cancel_many.remote(self._endpoint.name, ids, statuses)

    def _delete_call(
        self, task_ids: Iterable[str] | None, status: str | None, older_than_s: float | None
    ) -> Any:
        request = DeleteManyRequest.model_validate(
            {
                **({"task_ids": list(task_ids)} if task_ids is not None else {}),
                **({"status": status} if status is not None else {}),
                **({"older_than_s": older_than_s} if older_than_s is not None else {}),
            }
        )
        ids = None if request.task_ids is None else [t.lower() for t in request.task_ids]
        return self._client._manager.delete_many.remote(
            self._endpoint.name, ids, request.status, request.older_than_s
        )

    def _job_lines(self, inputs: Iterable[Mapping[str, Any]]) -> tuple[str, bytes]:
        """A batch job's endpoint and input file, every input validated first."""
        url = f"/{self._endpoint.name}"
        return url, request_lines(url, (self._item((), dict(kw)).kwargs for kw in inputs))

    def _submit_many(self, inputs: Iterable[Mapping[str, Any]]) -> Any:
        """One all-or-none ``submit_many`` call for every input, all validated first."""
        if self._settings.idempotency_key is not None:
            raise ValueError("an idempotency key names one task: use submit, not submit_many")
        validated = [self._item((), dict(kwargs)).kwargs for kwargs in inputs]
        name, options = self._endpoint.name, self._settings.options
        tenant = self._client.tenant
        return self._client._manager.submit_many.remote(name, validated, options, None, tenant)


class ClusterEndpoint(_Endpoint):
    """``client.NAME`` of a :class:`ClusterClient`: ``submit`` tasks to it (blocking)."""

    _client: ClusterClient

    def submit(self, *args: Any, **kwargs: Any) -> ClusterTask:
        """Submit a task; returns its handle.

        Raises:
            TypeError: the arguments do not fit the signature.
            InvalidInputError: they fail validation (nothing is queued).
            QueueFullError: the queue is full.
        """
        state = unwrap(_ask(self._client._manager.submit.remote(self._item(args, kwargs))))
        return ClusterTask(self._client._tasks, state.task_id, self._endpoint.name)

    def task(self, task_id: str) -> ClusterTask:
        """The handle of a task submitted earlier (for example by another process)."""
        return ClusterTask(self._client._tasks, task_id, self._endpoint.name)

    def submit_many(self, inputs: Iterable[Mapping[str, Any]]) -> list[ClusterTask]:
        """Submit one task per input, all or none (as HTTP ``submit_many``), validated
        first, in one manager call. Returns the handles in input order.

        Raises:
            InvalidInputError: an input fails validation (nothing is queued).
            QueueFullError: the queue has no room for all of them (nothing is queued).
        """
        states = unwrap(_ask(self._submit_many(inputs)))
        return [ClusterTask(self._client._tasks, s.task_id, self._endpoint.name) for s in states]

    def batch(self, inputs: Iterable[Mapping[str, Any]], priority: int = -1) -> Job:
        """Run one task per input as a batch job (see :meth:`raytask.SyncHTTPClient`'s
        ``NAME.batch``); the file goes to the manager in pieces, over Ray."""
        url, data = self._job_lines(inputs)
        jobs = ManagerJobs(self._client._manager, self._client.tenant)
        return Job(jobs, jobs.start(data, url, priority))

    def list(
        self, status: str | Iterable[str] | None = None, limit: int = DEFAULT_LIST_LIMIT
    ) -> Iterator[TaskState]:
        """This endpoint's tasks, newest first, ``limit`` a page as you iterate."""
        statuses = statuses_of(status)
        return pages(lambda cursor: unwrap(_ask(self._list_call(statuses, limit, cursor))))

    def cancel_many(self, task_ids: Iterable[str] | None = None, status: str | None = None) -> int:
        """Cancel these tasks of the endpoint, or every one in ``status``; returns how many."""
        return int(_ask(self._cancel_call(task_ids, status)))

    def delete_many(
        self,
        task_ids: Iterable[str] | None = None,
        status: str | None = None,
        older_than_s: float | None = None,
    ) -> DeleteManyAnswer:
        """Delete finished tasks (see :meth:`raytask.SyncHTTPClient` endpoints'
        ``delete_many``)."""
        deleted, skipped = unwrap(_ask(self._delete_call(task_ids, status, older_than_s)))
        return DeleteManyAnswer(deleted=deleted, skipped=skipped)


class AsyncClusterEndpoint(_Endpoint):
    """``client.NAME`` of an :class:`AsyncClusterClient`: ``await ....submit(...)``."""

    _client: AsyncClusterClient

    async def submit(self, *args: Any, **kwargs: Any) -> AsyncClusterTask:
        """Submit a task; returns its handle (raises as :meth:`ClusterEndpoint.submit`).

        Concurrent submits of one client share manager calls.
        """
        state = unwrap(await self._client._submits(self._item(args, kwargs)))
        return AsyncClusterTask(self._client._tasks, state.task_id, self._endpoint.name)

    def task(self, task_id: str) -> AsyncClusterTask:
        """The handle of a task submitted earlier (for example by another process)."""
        return AsyncClusterTask(self._client._tasks, task_id, self._endpoint.name)

    async def submit_many(self, inputs: Iterable[Mapping[str, Any]]) -> list[AsyncClusterTask]:
        """Submit one task per input (see :meth:`ClusterEndpoint.submit_many`)."""
        states = unwrap(await self._submit_many(inputs))
        tasks = self._client._tasks
        return [AsyncClusterTask(tasks, s.task_id, self._endpoint.name) for s in states]

    async def batch(self, inputs: Iterable[Mapping[str, Any]], priority: int = -1) -> AsyncJob:
        """Run one task per input as a batch job (see :meth:`ClusterEndpoint.batch`)."""
        url, data = self._job_lines(inputs)
        jobs = AsyncManagerJobs(self._client._manager, self._client.tenant)
        return AsyncJob(jobs, await jobs.start(data, url, priority))

    async def list(
        self, status: str | Iterable[str] | None = None, limit: int = DEFAULT_LIST_LIMIT
    ) -> AsyncIterator[TaskState]:
        """This endpoint's tasks, newest first (see :meth:`ClusterEndpoint.list`)."""
        statuses = statuses_of(status)

        async def fetch(cursor: int | None) -> Page:
            return unwrap(await self._list_call(statuses, limit, cursor))

        async for state in async_pages(fetch):
            yield state

    async def cancel_many(
        self, task_ids: Iterable[str] | None = None, status: str | None = None
    ) -> int:
        """Cancel these tasks, or every one in ``status`` (see :meth:`ClusterEndpoint.cancel_many`)."""
        return int(await self._cancel_call(task_ids, status))

    async def delete_many(
        self,
        task_ids: Iterable[str] | None = None,
        status: str | None = None,
        older_than_s: float | None = None,
    ) -> DeleteManyAnswer:
        """Delete finished tasks (see :meth:`ClusterEndpoint.delete_many`)."""
        answer = await self._delete_call(task_ids, status, older_than_s)
        deleted, skipped = unwrap(answer)
        return DeleteManyAnswer(deleted=deleted, skipped=skipped)


class ClusterClient:
    """Submit tasks to a raytask app from inside its Ray cluster, blocking (see
    :func:`get_client`).

    Raises:
        EndpointNotFoundError: no raytask app of that name runs in the connected cluster.
    """

    def __init__(self, app_name: str, tenant: str = ANONYMOUS) -> None:
        self.app_name, self.tenant = app_name, check_name(tenant, "tenant")
        self._manager = _find_manager(app_name)
        self._tasks = ManagerTasks(self._manager)
        self._endpoints = _task_endpoints(_models(self._manager, app_name))

    def __getattr__(self, name: str) -> ClusterEndpoint:
        if name.startswith("_"):
            raise AttributeError(name)
        return ClusterEndpoint(self, _lookup(self._endpoints, name, self.app_name))


class AsyncClusterClient:
    """Submit tasks to a raytask app from inside its Ray cluster, from async code; make
    one with ``await raytask.get_async_client(app_name)`` (or :meth:`connect`)."""

    def __init__(
        self,
        app_name: str,
        manager: Any,
        models: list[tuple[str, type]],
        tenant: str = ANONYMOUS,
    ) -> None:
        self.app_name, self.tenant = app_name, check_name(tenant, "tenant")
        self._manager = manager
        self._tasks = AsyncManagerTasks(manager)
        self._submits: Coalescer[Submit, Any] = Coalescer(manager.submit_each.remote)
        self._endpoints = _task_endpoints(models)

    @classmethod
    async def connect(cls, app_name: str, tenant: str = ANONYMOUS) -> AsyncClusterClient:
        """Find the app's task manager and its endpoints without blocking the loop.

        Raises:
            EndpointNotFoundError: no raytask app of that name runs in the cluster.
        """
        manager = await asyncio.to_thread(_find_manager, app_name)
        return cls(app_name, manager, await manager.models.remote(), tenant)

    def __getattr__(self, name: str) -> AsyncClusterEndpoint:
        if name.startswith("_"):
            raise AttributeError(name)
        return AsyncClusterEndpoint(self, _lookup(self._endpoints, name, self.app_name))


def _lookup(endpoints: dict[str, Endpoint], name: str, app_name: str) -> Endpoint:
    endpoint = endpoints.get(name)
    if endpoint is None:
        raise EndpointNotFoundError(f"no task endpoint named {name!r} in app {app_name!r}")
    return endpoint


def get_client(app_name: str, tenant: str = ANONYMOUS) -> ClusterClient:
    """A blocking client for the raytask app ``app_name`` over Ray actor calls (no HTTP).

    From a deployment, or a driver already connected, it uses that connection; otherwise
    it joins the running cluster (``RAY_ADDRESS``, else the one this machine started last:
    ``serve run``'s), and never starts a new one.

    Raises:
        ConnectionError: no running cluster to join.
        EndpointNotFoundError: no raytask app of that name runs in the cluster.
        ServiceUnavailableError: its task manager did not answer (three tries of
            :data:`CALL_TIMEOUT_S` each); every later blocking call raises it too after
            :data:`CALL_TIMEOUT_S`, saying what to check, instead of waiting without end.

    Args:
        app_name: the Serve application name (``name:`` in the YAML, ``serve.run(name=...)``).
        tenant: whose tasks these are (SPEC 12: fair share, quotas, usage); code in the
            cluster is trusted to say, as it holds no token.

    Example::

        client = raytask.get_client("demo")
        task = client.wordcount.submit(text="to be or not to be")
        task.get(timeout=30)   # {"words": 6, "top": [...]}
    """
    return ClusterClient(app_name, tenant)


async def get_async_client(app_name: str, tenant: str = ANONYMOUS) -> AsyncClusterClient:
    """An async client for the raytask app ``app_name`` over Ray actor calls, for
    deployments and other async code: nothing it does blocks the event loop.

    Example::

        client = await raytask.get_async_client("demo")
        task = await client.wordcount.submit(text="to be or not to be")
        await task.get(timeout=30)
    """
    return await AsyncClusterClient.connect(app_name, tenant)
