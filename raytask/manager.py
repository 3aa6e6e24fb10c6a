"""The task manager: one detached, named Ray actor per application.

It holds the :class:`~raytask.table.TaskTable` (queue and state machine), dispatches
pending tasks to the model deployments only as fast as their replicas have room, owns the
``ObjectRef`` of every result without ever deserialising one, enforces timeouts, re-queues
attempts whose replica died, and drops results at their TTL so Ray frees them.

Its methods return raytask errors as values instead of raising them, so the ingress gets
a cheap answer rather than a Ray traceback.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import ray
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from .config import AppConfig, SubmitOptions, TaskOptions
from .errors import HTTPError, TaskFailedError
from .runner import RUN_METHOD, AttemptFailed
from .status import TaskStatus
from .table import TaskRecord, TaskTable

logger = logging.getLogger("raytask.manager")

NAMESPACE = "raytask"
_REPLICA_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)
_CAPACITY_REFRESH_S = 2.0
_POLL_S = 0.005
_INLINE_BYTES = 100 * 1024  # Ray inlines smaller returns; a failure is always smaller

T = TypeVar("T")


def manager_name(app_name: str) -> str:
    """The actor name of the task manager of Serve application ``app_name``."""
    return f"raytask-manager:{app_name}"


@dataclass(frozen=True)
class EndpointRoute:
    """What the manager needs to know of a task endpoint (plain, picklable data)."""

    name: str
    method: str
    deployment: str
    options: TaskOptions
    max_ongoing_requests: int


def _errors_as_values(
    method: Callable[..., Awaitable[T]],
) -> Callable[..., Awaitable[T | HTTPError]]:
    @functools.wraps(method)
    async def wrapper(self: TaskManager, *args: Any, **kwargs: Any) -> T | HTTPError:
        self._ensure_started()
        try:
            return await method(self, *args, **kwargs)
        except HTTPError as exc:
            return exc

    return wrapper


def _each(items: list[Any], answer: Callable[[Any], T]) -> list[T | HTTPError]:
    """``answer(item)`` for each item, an :class:`HTTPError` standing in for its answer."""
    answers: list[T | HTTPError] = []
    for item in items:
        try:
            answers.append(answer(item))
        except HTTPError as exc:
            answers.append(exc)
    return answers


class _Attempt:
    """One dispatched attempt: its handle response, result ref and deadline."""

    __slots__ = (
        "assigner",
        "attempt_no",
        "deadline",
        "deployment",
        "ref",
        "response",
        "stopping",
        "task_id",
    )

    def __init__(self, task_id: str, attempt_no: int, deployment: str) -> None:
        self.task_id = task_id
        self.attempt_no = attempt_no
        self.deployment = deployment
        self.response: Any = None
        self.ref: ray.ObjectRef | None = None
        self.deadline = float("inf")
        self.assigner: asyncio.Task[None] | None = None
        self.stopping = False

    def stop(self) -> None:
        """Cancel the request, before or after Serve has given it a replica."""
        self.stopping = True
        self.response.cancel()

    def stop_on_replica(self) -> None:
        """Cancel the request on its replica again, now that it surely has one.

        With Serve's router in this actor's event loop, ``DeploymentResponse.cancel()``
        reaches the replica only through the response's replica result, which Serve
        stores when the assignment is awaited. A cancel that came after the replica was
        chosen but before that await resumed reached nothing (seen in CI: a cancelled
        60 s task ran to its end), and a second ``cancel()`` returns at once.
        """
        replica_result = getattr(self.response, "_replica_result", None)
        if replica_result is not None:
            replica_result.cancel()


class TaskManager:
    """The actor class (made a Ray actor by :func:`get_or_create_manager`).

    Args:
        app_name: the Serve application it serves.
        routes: its task endpoints.
        config: app-wide settings.
    """

    def __init__(self, app_name: str, routes: list[EndpointRoute], config: AppConfig) -> None:
        self.app_name = app_name
        self.table = TaskTable(config.max_queue_size, config.retry_after_s)
        self._results: dict[str, ray.ObjectRef] = {}
        self._attempts: dict[str, _Attempt] = {}
        self._watched: dict[ray.ObjectRef, _Attempt] = {}
        self._in_flight: Counter[str] = Counter()
        self._capacity: dict[str, int] = {}
        self._handles: dict[str, Any] = {}
        self._started = False
        self._wake: asyncio.Event | None = None
        self._watch_wake: asyncio.Event | None = None
        self._background: list[asyncio.Task[None]] = []
        self._models: list[tuple[str, type]] = []
        self._gauges: dict[str, Any] | None = None
        self._apply(routes, config)

    def _apply(self, routes: list[EndpointRoute], config: AppConfig) -> None:
        self.config = config
        self.routes = {r.name: r for r in routes}
        self.table.max_queue_size = config.max_queue_size
        self.table.retry_after_s = config.retry_after_s
        for route in routes:
            self._capacity.setdefault(route.deployment, route.max_ongoing_requests)

    # -- background work -------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._started:
            return
        self._started = True
        self._wake = asyncio.Event()
        self._watch_wake = asyncio.Event()
        self._background = [
            asyncio.create_task(self._dispatch_loop()),
            asyncio.create_task(self._watch_loop()),
            asyncio.create_task(self._sweep_loop()),
            asyncio.create_task(self._capacity_loop()),
        ]

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _dispatch_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self._dispatch()
            except Exception:  # never let the loop die; the next kick tries again
                logger.exception("dispatch failed")

    def _dispatch(self) -> None:
        # Round-robin over endpoints, one task each pass, so one busy endpoint on a
        # shared deployment cannot starve the others.
        progress = True
        while progress:
            progress = False
            for route in self.routes.values():
                deployment = route.deployment
                if self._in_flight[deployment] >= self._limit(deployment):
                    continue
                record = self.table.pop_next(route.name)
                if record is None:
                    continue
                self._start_attempt(record, route)
                progress = True

    def _limit(self, deployment: str) -> int:
        if self.config.max_in_flight is not None:
            return self.config.max_in_flight
        return self._capacity.get(deployment, 1)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            for task_id in self.table.sweep():
                self._results.pop(task_id, None)

    async def _capacity_loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self._refresh_capacity)
            except Exception as exc:  # the controller may be restarting; keep the last numbers
                logger.debug("capacity refresh failed: %s", exc)
            self._kick()
            try:
                self._export_metrics()
            except Exception:  # metrics must never stop the capacity refresh
                logger.exception("exporting raytask metrics failed")
            await asyncio.sleep(_CAPACITY_REFRESH_S)

    def _export_metrics(self) -> None:
        """Queue numbers as Ray metrics (Ray's Prometheus endpoint exports them)."""
        if self._gauges is None:
            from ray.util.metrics import Gauge

            self._gauges = {
                "tasks": Gauge(
                    "raytask_tasks", "Tasks by state", tag_keys=("app", "endpoint", "status")
                ),
                "age": Gauge(
                    "raytask_oldest_pending_age_seconds",
                    "Age of the oldest pending task",
                    tag_keys=("app", "endpoint"),
                ),
                "in_flight": Gauge(
                    "raytask_in_flight",
                    "Tasks dispatched to a deployment",
                    tag_keys=("app", "deployment"),
                ),
            }
        snapshot = self._queue_snapshot()
        for name, numbers in snapshot["endpoints"].items():
            tags = {"app": self.app_name, "endpoint": name}
            for status in TaskStatus:
                self._gauges["tasks"].set(numbers[status.value], {**tags, "status": status.value})
            self._gauges["age"].set(numbers["oldest_pending_age_s"] or 0.0, tags)
        for deployment, numbers in snapshot["deployments"].items():
            self._gauges["in_flight"].set(
                numbers["in_flight"], {"app": self.app_name, "deployment": deployment}
            )

    def _refresh_capacity(self) -> None:
        app = serve.status().applications.get(self.app_name)
        if app is None:
            return
        for route in self.routes.values():
            deployment = app.deployments.get(route.deployment)
            if deployment is None:
                continue
            running = deployment.replica_states.get("RUNNING", 0)
            # With no replica running (starting, or scaled to zero) still send one
            # replica's worth, so Serve sees the demand and brings one up.
            self._capacity[route.deployment] = max(1, running) * route.max_ongoing_requests

    # -- one attempt -----------------------------------------------------------

    def _handle(self, deployment: str) -> Any:
        if deployment not in self._handles:
            self._handles[deployment] = serve.get_deployment_handle(
                deployment, app_name=self.app_name
            ).options(method_name=RUN_METHOD)
        return self._handles[deployment]

    def _start_attempt(self, record: TaskRecord, route: EndpointRoute) -> None:
        attempt = _Attempt(record.task_id, record.attempts, route.deployment)
        self._attempts[record.task_id] = attempt
        self._in_flight[route.deployment] += 1
        attempt.response = self._handle(route.deployment).remote(route.method, record.kwargs)
        attempt.assigner = asyncio.create_task(self._assigned(attempt, record.options.timeout_s))

    async def _assigned(self, attempt: _Attempt, timeout_s: float) -> None:
        """Wait until Serve has given the attempt a replica, then watch its result."""
        try:
            attempt.ref = await attempt.response._to_object_ref()
        except asyncio.CancelledError:  # cancelled by a user before it reached a replica
            self._release(attempt)
            return
        except Exception as exc:
            self._settle_error(attempt, exc)
            return
        if attempt.stopping:
            attempt.stop_on_replica()
        attempt.deadline = time.monotonic() + timeout_s
        self._watched[attempt.ref] = attempt
        assert self._watch_wake is not None
        self._watch_wake.set()

    async def _watch_loop(self) -> None:
        """Poll every in-flight result ref without fetching it; settle the ready ones."""
        assert self._watch_wake is not None
        while True:
            if not self._watched:
                await self._watch_wake.wait()
                self._watch_wake.clear()
                continue
            try:
                refs = list(self._watched)
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
                if ready:
                    await self._settle(ready)
                self._expire_attempts()
            except Exception:  # never let the loop die
                logger.exception("watching results failed")
            await asyncio.sleep(_POLL_S)

    async def _settle(self, ready: list[ray.ObjectRef]) -> None:
        locations = ray.experimental.get_object_locations(ready)
        for ref in ready:
            attempt = self._watched.pop(ref)
            info = locations.get(ref) or {}
            if info.get("node_ids") or (info.get("object_size") or 0) > _INLINE_BYTES:
                # Too big to be inlined, so it is a value: never fetch it here.
                self._succeed(attempt, ref)
                continue
            try:
                value = await ref
            except Exception as exc:
                self._settle_error(attempt, exc)
                continue
            if isinstance(value, AttemptFailed):
                record = self._record(attempt)
                retry = record is not None and record.options.retry_exceptions
                self._fail(attempt, value.error, retryable=retry)
            else:
                self._succeed(attempt, ref)

    def _settle_error(self, attempt: _Attempt, exc: BaseException) -> None:
        if isinstance(exc, _REPLICA_LOST):
            reason = f"the replica running it died ({type(exc).__name__})"
        else:  # a cancelled request, a lost object, a Serve error
            reason = f"{type(exc).__name__}: {exc}"
        self._fail(attempt, reason, retryable=True)

    def _expire_attempts(self) -> None:
        now = time.monotonic()
        for ref, attempt in list(self._watched.items()):
            if now >= attempt.deadline:
                del self._watched[ref]
                attempt.stop()
                record = self._record(attempt)
                timeout_s = record.options.timeout_s if record else 0
                self._fail(attempt, f"timed out after {timeout_s:g} s", retryable=True)

    def _record(self, attempt: _Attempt) -> TaskRecord | None:
        """The attempt's task if this attempt still owns it (not cancelled or expired)."""
        try:
            record = self.table.get(attempt.task_id)
        except HTTPError:
            return None
        if record.status is TaskStatus.IN_PROGRESS and record.attempts == attempt.attempt_no:
            return record
        return None

    def _succeed(self, attempt: _Attempt, ref: ray.ObjectRef) -> None:
        if self._record(attempt) is not None:
            self._results[attempt.task_id] = ref
            self.table.succeed(attempt.task_id)
        self._release(attempt)

    def _fail(self, attempt: _Attempt, reason: str, retryable: bool) -> None:
        if self._record(attempt) is not None:
            self.table.fail(attempt.task_id, reason, retryable=retryable)
        self._release(attempt)

    def _release(self, attempt: _Attempt) -> None:
        if self._attempts.get(attempt.task_id) is attempt:
            del self._attempts[attempt.task_id]
        self._in_flight[attempt.deployment] -= 1
        self._kick()

    # -- the API the ingress and the clients call ------------------------------

    @_errors_as_values
    async def submit(
        self, endpoint: str, kwargs: dict[str, Any], options: SubmitOptions
    ) -> dict[str, Any]:
        """Queue a task; returns its status answer (``pending``)."""
        answer = self._submit_one(endpoint, kwargs, options)
        self._kick()
        return answer

    async def submit_many(
        self, items: list[tuple[str, dict[str, Any], SubmitOptions]]
    ) -> list[dict[str, Any] | HTTPError]:
        """Queue several tasks in one call: ``(endpoint, kwargs, options)`` each.

        One answer per item, in order: its status answer, or its error (a full queue
        refuses the items past its room, not the whole call).
        """
        self._ensure_started()
        answers = _each(items, lambda item: self._submit_one(*item))
        self._kick()
        return answers

    def _submit_one(self, endpoint: str, kwargs: dict[str, Any], options: SubmitOptions) -> dict:
        route = self.routes.get(endpoint)
        if route is None:
            raise TaskFailedError(f"the task manager has no endpoint {endpoint!r}")
        return self.table.submit(endpoint, kwargs, options.apply(route.options)).view()

    @_errors_as_values
    async def status(self, task_id: str) -> dict[str, Any]:
        """The status answer of a task."""
        return self.table.get(task_id).view()

    async def status_many(self, task_ids: list[str]) -> list[dict[str, Any] | HTTPError]:
        """The status answers (or errors) of several tasks, in order."""
        self._ensure_started()
        return _each(task_ids, lambda task_id: self.table.get(task_id).view())

    @_errors_as_values
    async def result(self, task_id: str) -> list[ray.ObjectRef]:
        """``[ref]`` to the result of a successful task (the caller fetches it)."""
        self.table.check_result(task_id)
        return [self._results[task_id]]

    @_errors_as_values
    async def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a pending task, or stop a running one."""
        previous = self.table.cancel(task_id)
        attempt = self._attempts.get(task_id)
        if previous is TaskStatus.IN_PROGRESS and attempt is not None:
            # Its slot is released when the replica confirms (the ref settles).
            attempt.stop()
        return self.table.get(task_id).view()

    @_errors_as_values
    async def retry(self, task_id: str) -> dict[str, Any]:
        """Queue a new task with the inputs of a finished one."""
        record = self.table.retry(task_id)
        self._kick()
        return record.view()

    async def configure(
        self, routes: list[EndpointRoute], config: AppConfig, models: list[tuple[str, type]]
    ) -> None:
        """Take new endpoints and settings (a redeployed app's ingress calls this)."""
        self._ensure_started()
        self._apply(routes, config)
        self._models = models
        self._warm_handles()
        self._kick()

    def _warm_handles(self) -> None:
        # A handle builds its router (and waits for the replica set) on its first call,
        # which cost the app's first task about 4 s; build it now instead.
        for deployment in {r.deployment for r in self.routes.values()}:
            try:
                handle = self._handle(deployment)
                if not handle.is_initialized:
                    handle._init()
            except Exception as exc:  # a private Serve API: the first call still works
                logger.debug("could not warm the handle of %s: %s", deployment, exc)

    async def models(self) -> list[tuple[str, type]]:
        """``(deployment name, class)`` of each model (in-cluster clients validate with them)."""
        return self._models

    async def depth(self) -> dict[str, dict[str, int]]:
        """Per model deployment: tasks pending in the queue and in flight (for autoscaling)."""
        self._ensure_started()
        depths: dict[str, dict[str, int]] = {}
        for route in self.routes.values():
            numbers = depths.setdefault(
                route.deployment, {"pending": 0, "in_flight": self._in_flight[route.deployment]}
            )
            numbers["pending"] += self.table.pending_by_endpoint(route.name)
        return depths

    async def queue(self) -> dict[str, Any]:
        """Per endpoint counts by state and the oldest pending task's age; per deployment
        tasks in flight and the dispatch limit (the ``GET /queue`` answer)."""
        self._ensure_started()
        return self._queue_snapshot()

    def _queue_snapshot(self) -> dict[str, Any]:
        deployments = {
            d: {"in_flight": self._in_flight[d], "limit": self._limit(d)} for d in self._capacity
        }
        return {
            "app": self.app_name,
            "endpoints": self.table.endpoint_stats(self.routes),
            "deployments": deployments,
        }

    async def ping(self) -> bool:
        """Liveness for the ingress's /readyz (cheap, unlike :meth:`stats`)."""
        self._ensure_started()
        return True

    async def stats(self) -> dict[str, Any]:
        """Numbers for operators and tests: pid, RSS, queue depth, in-flight, counts."""
        self._ensure_started()
        return {
            "pid": os.getpid(),
            "rss_bytes": _rss_bytes(),
            "pending": self.table.pending_count,
            "in_flight": dict(self._in_flight),
            "capacity": {d: self._limit(d) for d in self._capacity},
            "results_held": len(self._results),
            "counts": self.table.counts(),
        }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def get_or_create_manager(app_name: str, routes: list[EndpointRoute], config: AppConfig) -> Any:
    """The app's manager actor, created detached on first use (safe to race)."""
    actor_class = ray.remote(TaskManager)
    return actor_class.options(
        name=manager_name(app_name),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        num_cpus=0,
        max_concurrency=10_000,
        # The manager's handles route in its own event loop instead of a second thread's
        # (Serve's default): fewer thread hops per dispatched task.
        runtime_env={"env_vars": {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}},
    ).remote(app_name, routes, config)
