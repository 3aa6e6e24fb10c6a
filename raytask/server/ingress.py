"""The ingress deployment: the HTTP routes, backed by the task manager over Ray."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import ray
from ray import serve
from ray.exceptions import (
    ActorUnavailableError,
    ObjectFetchTimedOutError,
    ObjectLostError,
    RayActorError,
    RayTaskError,
)
from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

from ..core.batching import Coalescer
from ..core.config import AppConfig, SubmitOptions
from ..core.copy import StateCopy
from ..core.dispatcher import EndpointRoute
from ..core.endpoint import Endpoint, discover
from ..core.errors import (
    EndpointNotFoundError,
    HTTPError,
    ServiceUnavailableError,
    TaskFailedError,
    unwrap,
)
from ..core.feed import HOLD_S, LEASE_S, Group
from ..core.messages import StreamRead, Submit, seen_by
from ..core.names import INGRESS_NAME
from ..core.queue import ANONYMOUS
from ..core.state import TaskState
from ..core.usage import UsageQuery
from .jobs import JOB_COMMANDS
from .manager import get_or_create_manager
from .reads import CopiedReads
from .routes import Routes

T = TypeVar("T")


class RayBackend:
    """The routes' backend: the manager actor for tasks, model handles for sync calls.

    Args:
        manager: the task manager's actor handle.
        endpoints: the app's endpoints.
        handles: a ``DeploymentHandle`` per model deployment name.
        timeout_s: how long a manager call may take before the route answers 503.
        app_name: its Serve application (left out of :meth:`apps`).
    """

    def __init__(
        self,
        manager: Any,
        endpoints: list[Endpoint],
        handles: dict[str, Any],
        timeout_s: float = 10.0,
        app_name: str = "",
    ) -> None:
        self.manager = manager
        self.endpoints = {e.name: e for e in endpoints}
        self.handles = handles
        self.timeout_s = timeout_s
        self.app_name = app_name
        self._apps: list[tuple[str, str]] | None = None
        self._apps_at = 0.0
        # Submits and status reads are most of the traffic: concurrent ones share one
        # manager call (see raytask.core.batching).
        self._submits: Coalescer[Submit, Any] = Coalescer(
            lambda items: self._ask(manager.submit_each.remote(items))
        )
        self._statuses: Coalescer[str, Any] = Coalescer(
            lambda ids: self._ask(manager.status_many.remote(ids))
        )
        self.jobs = RayJobs(self)
        self._subscriber = uuid.uuid4().hex  # this replica, to the manager's change feed

    async def _ask(self, call: Awaitable[T], timeout_s: float | None = None) -> T:
        """A manager call's answer; 503 while the manager is down or restarting (Ray
        restarts it and it reloads its journal: clients retry after ``Retry-After``)."""
        timeout_s = timeout_s or self.timeout_s
        try:
            return await asyncio.wait_for(call, timeout_s)
        except (RayActorError, ActorUnavailableError) as exc:
            raise ServiceUnavailableError(
                f"the task manager is unavailable ({type(exc).__name__}); retry shortly"
            ) from None
        except TimeoutError:
            raise ServiceUnavailableError(
                f"the task manager did not answer within {timeout_s:g} s; retry shortly"
            ) from None

    async def submit(self, item: Submit) -> TaskState:
        return unwrap(await self._submits(item))

    async def submit_many(
        self,
        endpoint: str,
        inputs: list[dict[str, Any]],
        options: SubmitOptions,
        owner: str | None = None,
        tenant: str = ANONYMOUS,
    ) -> list[TaskState]:
        call = self.manager.submit_many.remote(endpoint, inputs, options, owner, tenant)
        return unwrap(await self._ask(call))

    async def status(
        self, task_id: str, owner: str | None = None, endpoint: str | None = None
    ) -> TaskState:
        # Concurrent reads share one call whoever asks; the owner rule applies here.
        return unwrap(seen_by(owner, task_id, await self._statuses(task_id), endpoint))

    async def wait(
        self,
        task_id: str,
        wait_s: float,
        owner: str | None = None,
        endpoint: str | None = None,
    ) -> TaskState:
        # The manager holds the call until the task finishes: give it that long, too.
        call = self.manager.wait.remote(task_id, wait_s, owner, endpoint)
        return unwrap(await self._ask(call, timeout_s=wait_s + self.timeout_s))

    async def status_many(
        self, task_ids: list[str], owner: str | None = None
    ) -> list[TaskState | HTTPError]:
        return await self._ask(self.manager.status_many.remote(task_ids, owner))

    async def cancel_many(
        self,
        endpoint: str | None,
        task_ids: list[str] | None,
        statuses: list[str] | None,
        owner: str | None = None,
    ) -> int:
        call = self.manager.cancel_many.remote(endpoint, task_ids, statuses, owner)
        return await self._ask(call)

    async def stream(
        self,
        task_id: str,
        start: int = 0,
        attempt: int | None = None,
        wait_s: float = 15.0,
        owner: str | None = None,
        endpoint: str | None = None,
    ) -> StreamRead:
        # The manager holds the call until there is something new: give it that long, too.
        call = self.manager.stream.remote(task_id, start, attempt, wait_s, owner, endpoint)
        return unwrap(await self._ask(call, timeout_s=wait_s + self.timeout_s))

    async def delete_many(
        self,
        endpoint: str | None,
        task_ids: list[str] | None,
        status: str | None = None,
        older_than_s: float = 0.0,
        owner: str | None = None,
    ) -> tuple[int, int]:
        call = self.manager.delete_many.remote(endpoint, task_ids, status, older_than_s, owner)
        return unwrap(await self._ask(call))

    async def list_tasks(
        self,
        endpoint: str | None,
        statuses: list[str] | None,
        limit: int,
        cursor: int | None,
        owner: str | None = None,
    ) -> tuple[list[TaskState], int | None]:
        call = self.manager.list_tasks.remote(endpoint, statuses, limit, cursor, owner)
        return unwrap(await self._ask(call))

    async def result(
        self,
        task_id: str,
        owner: str | None = None,
        endpoint: str | None = None,
        wait_s: float = 0.0,
    ) -> Any:
        # One call, even with wait_s: the manager holds it until the task finishes.
        call = self.manager.result.remote(task_id, owner, endpoint, wait_s)
        (held,) = unwrap(await self._ask(call, timeout_s=wait_s + self.timeout_s))
        if not inspect.isawaitable(held):  # a small value, kept as it is (else an ObjectRef)
            return held
        try:
            return await held
        except (ObjectLostError, ObjectFetchTimedOutError) as exc:
            raise TaskFailedError(f"the result of task {task_id} was lost: {exc}") from None

    async def cancel(
        self, task_id: str, owner: str | None = None, endpoint: str | None = None
    ) -> TaskState:
        return unwrap(await self._ask(self.manager.cancel.remote(task_id, owner, endpoint)))

    async def retry(
        self, task_id: str, owner: str | None = None, endpoint: str | None = None
    ) -> TaskState:
        return unwrap(await self._ask(self.manager.retry.remote(task_id, owner, endpoint)))

    async def call(self, endpoint: str, kwargs: dict[str, Any]) -> Any:
        spec = self.endpoints.get(endpoint)
        if spec is None:
            raise EndpointNotFoundError(f"no endpoint named {endpoint!r}")
        if spec.streams:  # a generator: the JSON array of its chunks
            return [chunk async for chunk in self.call_stream(endpoint, kwargs)]
        handle = self.handles[spec.deployment].options(method_name=spec.method)
        try:
            return await handle.remote(**spec.to_call_kwargs(kwargs))
        except RayTaskError as exc:
            raise _call_failed(endpoint, exc) from None

    async def call_stream(self, endpoint: str, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        spec = self.endpoints.get(endpoint)
        if spec is None:
            raise EndpointNotFoundError(f"no endpoint named {endpoint!r}")
        handle = self.handles[spec.deployment].options(method_name=spec.method, stream=True)
        try:
            async for chunk in handle.remote(**spec.to_call_kwargs(kwargs)):
                yield chunk
        except RayTaskError as exc:
            raise _call_failed(endpoint, exc) from None

    async def queue(self) -> dict[str, Any]:
        return await self._ask(self.manager.queue.remote())

    async def changes(self, epoch: str | None, since: int) -> Group:
        """The manager's changes past ``since`` (a long-poll of this replica's copy)."""
        call = self.manager.changes.remote(self._subscriber, epoch, since)
        return unwrap(await self._ask(call, timeout_s=HOLD_S + LEASE_S))

    async def usage(self, query: UsageQuery) -> list[dict[str, Any]]:
        return unwrap(await self._ask(self.manager.usage.remote(query)))

    async def apps(self) -> list[tuple[str, str]]:
        """The other raytask apps on this Serve instance (each has an ingress named
        ``RaytaskIngress``), as Serve's controller lists them; kept 10 s."""
        now = time.monotonic()
        if self._apps is None or now - self._apps_at > 10:
            controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
            details = await self._ask(controller.get_serve_instance_details.remote(), 5.0)
            self._apps, self._apps_at = raytask_apps(details, self.app_name), now
        return self._apps

    async def ready(self) -> bool:
        try:
            await self._ask(self.manager.ping.remote())
        except (ServiceUnavailableError, ray.exceptions.RayError):
            return False
        return True


class RayJobs:
    """The ``/v1`` routes' jobs: each command of :data:`JOB_COMMANDS` is a call to the
    manager's ``job`` (errors come back as values and are raised here)."""

    def __init__(self, backend: RayBackend) -> None:
        self._backend = backend

    def __getattr__(self, command: str) -> Callable[..., Awaitable[Any]]:
        if command not in JOB_COMMANDS:
            raise AttributeError(command)
        backend = self._backend

        async def call(*args: Any) -> Any:
            return unwrap(await backend._ask(backend.manager.job.remote(command, *args)))

        return call


def _call_failed(endpoint: str, exc: RayTaskError) -> TaskFailedError:
    cause = exc.cause if exc.cause is not None else exc
    return TaskFailedError(f"{endpoint} failed: {type(cause).__name__}: {cause}")


def raytask_apps(details: dict[str, Any], own: str) -> list[tuple[str, str]]:
    """``(name, route prefix)`` of the raytask apps in Serve's instance details, but ``own``."""
    found = []
    for name, app in sorted((details.get("applications") or {}).items()):
        deployments = app.get("deployments") or {}
        if name != own and INGRESS_NAME in deployments and app.get("route_prefix"):
            found.append((name, app["route_prefix"]))
    return found


@serve.ingress()
class Ingress:
    """The HTTP front of a raytask app (deployed by :func:`raytask.app`).

    Args:
        models: ``(deployment name, deployment class)`` of each model deployment.
        sizes: each model deployment's ``(max_ongoing_requests, num_gpus)``.
        config: app-wide settings.
        handles: the bound model deployments, which Serve turns into handles.
    """

    async def __init__(
        self,
        models: list[tuple[str, type]],
        sizes: dict[str, tuple[int, float]],
        config: AppConfig,
        *handles: Any,
    ) -> None:
        self.config = config
        self.endpoints = [
            e for name, cls in models for e in discover(cls, name, config.task_defaults)
        ]
        routes = [
            EndpointRoute(
                e.name,
                e.method,
                e.deployment,
                e.options,
                sizes[e.deployment][0],
                e.streams,
                gpus=sizes[e.deployment][1],
            )
            for e in self.endpoints
            if e.is_task
        ]
        app_name = serve.get_replica_context().app_name
        self.manager = get_or_create_manager(app_name, routes, config, models)
        # A manager left from an earlier deployment of this app takes the new settings.
        await self.manager.configure.remote(routes, config, models)
        direct = RayBackend(
            self.manager,
            self.endpoints,
            {name: h for (name, _), h in zip(models, handles, strict=True)},
            timeout_s=config.manager_timeout_s,
            app_name=app_name,
        )
        # Reads answer from this replica's copy of the task states, which follows the
        # manager's change feed (see raytask.core.feed).
        self.copy = StateCopy()
        self.backend = CopiedReads(direct, self.copy)
        self._following = asyncio.create_task(self.copy.follow(direct.changes))

    def __serve_build_asgi_app__(self) -> Any:
        return Routes(self.endpoints, self.backend, self.config).asgi_app()
