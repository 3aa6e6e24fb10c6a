"""The in-cluster client: submit and follow tasks over Ray actor calls, without HTTP.

For Ray drivers and for other deployments of the cluster. It finds the app's task manager
by name, validates inputs locally with the same models as the ingress, and ``get`` returns
the method's Python return value straight from the object store (no HTTP encoding).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import ray

from .batching import Coalescer
from .config import SubmitOptions
from .endpoint import Endpoint, discover
from .errors import EndpointNotFoundError, HTTPError
from .handles import TaskIdentity, wait_async, wait_sync
from .manager import NAMESPACE, manager_name
from .protocol import RemoteEndpoint, as_type_of
from .status import TaskStatus

SUBMIT_CHUNK = 1000  # tasks per manager call in submit_many
_NO_OVERRIDES = SubmitOptions()  # frozen, so every submit can share it


def _unwrap(answer: Any) -> Any:
    if isinstance(answer, HTTPError):
        raise answer
    return answer


class _ClusterHandle(TaskIdentity):
    def __init__(self, manager: Any, endpoint: str, task_id: str) -> None:
        super().__init__(task_id, endpoint)
        self._manager = manager


class ClusterTask(_ClusterHandle):
    """A task handle over Ray (blocking), with the names of :class:`raytask.Task`."""

    def get_status(self) -> TaskStatus:
        """The task's current status."""
        return TaskStatus(_unwrap(ray.get(self._manager.status.remote(self._id)))["status"])

    def wait(self, timeout: float | None = None) -> TaskStatus:
        """Poll until the task finishes; return its final status."""
        return wait_sync(self, timeout, "get_client(..., asynchronous=True)")

    def get(self, timeout: float | None = None, as_type: Any = None) -> Any:
        """The method's return value; with ``timeout``, wait for it first."""
        if timeout is not None:
            self.wait(timeout)
        (ref,) = _unwrap(ray.get(self._manager.result.remote(self._id)))
        return as_type_of(ray.get(ref), as_type)

    def cancel(self) -> TaskStatus:
        """Cancel the task if queued, stop it if running."""
        return TaskStatus(_unwrap(ray.get(self._manager.cancel.remote(self._id)))["status"])

    def retry(self) -> ClusterTask:
        """Run the task again with the same inputs; returns the new task."""
        state = _unwrap(ray.get(self._manager.retry.remote(self._id)))
        return ClusterTask(self._manager, self._endpoint_name, state["task_id"])


class AsyncClusterTask(_ClusterHandle):
    """A task handle over Ray for async code (deployments), with the names of ``AsyncTask``."""

    async def get_status(self) -> TaskStatus:
        """The task's current status."""
        return TaskStatus(_unwrap(await self._manager.status.remote(self._id))["status"])

    async def wait(self, timeout: float | None = None) -> TaskStatus:
        """Poll until the task finishes; return its final status."""
        return await wait_async(self, timeout)

    async def get(self, timeout: float | None = None, as_type: Any = None) -> Any:
        """The method's return value; with ``timeout``, wait for it first."""
        if timeout is not None:
            await self.wait(timeout)
        (ref,) = _unwrap(await self._manager.result.remote(self._id))
        return as_type_of(await ref, as_type)

    async def cancel(self) -> TaskStatus:
        """Cancel the task if queued, stop it if running."""
        return TaskStatus(_unwrap(await self._manager.cancel.remote(self._id))["status"])

    async def retry(self) -> AsyncClusterTask:
        """Run the task again with the same inputs; returns the new task."""
        state = _unwrap(await self._manager.retry.remote(self._id))
        return AsyncClusterTask(self._manager, self._endpoint_name, state["task_id"])


class ClusterEndpoint:
    """``client.NAME`` of a cluster client: ``submit`` tasks to it."""

    def __init__(self, client: ClusterClient, endpoint: Endpoint) -> None:
        self._client, self._endpoint = client, endpoint
        self._binder = RemoteEndpoint.from_route(endpoint.route_info())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._endpoint.name!r})"

    def _item(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        stored = self._endpoint.validate(self._binder.bind(args, kwargs))
        return (self._endpoint.name, stored, _NO_OVERRIDES)

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        """Submit a task; returns a :class:`ClusterTask` (or, for an async client, a
        coroutine of an :class:`AsyncClusterTask`).

        Raises:
            TypeError: the arguments do not fit the signature.
            InvalidInputError: they fail validation (nothing is queued).
            QueueFullError: the queue is full.
        """
        item = self._item(args, kwargs)
        if self._client.asynchronous:
            return self._async_submitted(item)
        state = _unwrap(ray.get(self._client._manager.submit.remote(*item)))
        return ClusterTask(self._client._manager, self._endpoint.name, state["task_id"])

    async def _async_submitted(self, item: Any) -> AsyncClusterTask:
        # Concurrent submits of this client share manager calls.
        state = _unwrap(await self._client._submits(item))
        return AsyncClusterTask(self._client._manager, self._endpoint.name, state["task_id"])

    def submit_many(self, inputs: Iterable[Mapping[str, Any]]) -> Any:
        """Submit one task per input, validated first, in manager calls of up to
        :data:`SUBMIT_CHUNK` tasks each. Returns the handles in input order.

        Raises:
            InvalidInputError: an input fails validation (nothing is queued).
            QueueFullError: the queue filled up; the tasks before it stay queued.
        """
        name = self._endpoint.name
        items = [self._item((), dict(kwargs)) for kwargs in inputs]
        manager = self._client._manager
        pendings = [
            manager.submit_many.remote(items[i : i + SUBMIT_CHUNK])
            for i in range(0, len(items), SUBMIT_CHUNK)
        ]
        if self._client.asynchronous:

            async def gather() -> list[AsyncClusterTask]:
                chunks = await asyncio.gather(*pendings)
                states = [_unwrap(s) for chunk in chunks for s in chunk]
                return [AsyncClusterTask(manager, name, s["task_id"]) for s in states]

            return gather()
        states = [_unwrap(s) for chunk in ray.get(pendings) for s in chunk]
        return [ClusterTask(manager, name, s["task_id"]) for s in states]


class ClusterClient:
    """Submit tasks to a raytask app from inside its Ray cluster (see :func:`get_client`)."""

    def __init__(self, app_name: str, asynchronous: bool = False) -> None:
        self.app_name = app_name
        self.asynchronous = asynchronous
        try:
            self._manager = ray.get_actor(manager_name(app_name), namespace=NAMESPACE)
        except ValueError:
            raise EndpointNotFoundError(f"no raytask app named {app_name!r} is running") from None
        self._submits: Coalescer[Any, Any] = Coalescer(self._manager.submit_many.remote)
        models = ray.get(self._manager.models.remote())
        self._endpoints = {
            e.name: e for name, cls in models for e in discover(cls, name) if e.is_task
        }

    def __getattr__(self, name: str) -> ClusterEndpoint:
        if name.startswith("_"):
            raise AttributeError(name)
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            raise EndpointNotFoundError(f"no task endpoint named {name!r} in app {self.app_name!r}")
        return ClusterEndpoint(self, endpoint)


def get_client(app_name: str, *, asynchronous: bool = False) -> ClusterClient:
    """A client for the raytask app ``app_name`` over Ray actor calls (no HTTP).

    Use it from a Ray driver connected to the cluster, or from another deployment.

    Args:
        app_name: the Serve application name (``name:`` in the YAML, ``serve.run(name=...)``).
        asynchronous: handles with ``async`` methods, for code running in an event loop.

    Example::

        client = raytask.get_client("demo")
        task = client.wordcount.submit(text="to be or not to be")
        task.get(timeout=30)   # {"words": 6, "top": [...]}
    """
    return ClusterClient(app_name, asynchronous=asynchronous)
