"""The task manager: one detached, named Ray actor per application.

A thin shell over the pure core: the :class:`~raytask.core.table.TaskTable` holds the
queue and the state machine, the :class:`~raytask.core.dispatcher.Dispatcher` decides what
runs and how attempts end, and :class:`~raytask.server.calls.ReplicaCalls` is its I/O with
Serve, with :class:`~raytask.server.attempts.Attempts` sending and watching the attempts in
flight. The actor adds four background loops (dispatch, attempt deadlines, TTL sweep, capacity
and metrics), started once in its constructor, and the methods the ingress and the clients
call.

It owns the ``ObjectRef`` of every result without ever deserialising a large one, and
drops results at their TTL so Ray frees them. Its methods return raytask errors as values
instead of raising them, so the ingress gets a cheap answer rather than a Ray traceback.

Every change a client is told of is in the :class:`~raytask.server.journal.Journal`
before the answer goes out, and the constructor rebuilds the table from it (see
:mod:`raytask.core.recovery`), so a crash of this actor (Ray restarts it) or a new
``serve run`` loses no task. The actor is pinned to the head node, where the SQLite
journal lives, the way Serve pins its controller.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import ray
from ray import cloudpickle

from ..core.config import AppConfig, SubmitOptions, TaskOptions
from ..core.dispatcher import Dispatcher, EndpointRoute
from ..core.errors import HTTPError, TaskFailedError, unwrap
from ..core.metrics import samples
from ..core.names import NAMESPACE, manager_name
from ..core.record import approx_size
from ..core.recovery import recover
from ..core.state import TaskState
from ..core.status import TaskStatus
from ..core.table import TaskRecord, TaskTable
from ..core.webhooks import event_of
from . import compat
from .attempts import Attempts
from .calls import ReplicaCalls
from .journal import Journal, Store, open_store
from .webhooks import Webhooks

logger = logging.getLogger("raytask.manager")

_CAPACITY_REFRESH_S = 2.0

T = TypeVar("T")


def _errors_as_values(
    method: Callable[..., Awaitable[T]],
) -> Callable[..., Awaitable[T | HTTPError]]:
    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> T | HTTPError:
        try:
            return await method(*args, **kwargs)
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


class TaskManager:
    """The actor class (made a Ray actor by :func:`get_or_create_manager`).

    Construct it inside a running event loop (Ray runs an async actor's constructor in
    its loop): the background loops start here, and only here.

    Args:
        app_name: the Serve application it serves.
        routes: its task endpoints.
        config: app-wide settings.
        models: ``(deployment name, class)`` of each model (for in-cluster clients).
        calls: its I/O with Serve (tests pass a fake).
        store: where the journal goes (default: what ``config.journal`` names).
        settings: where the latest ``(routes, config, models)`` are kept for a restart
            (default: Ray's GCS, see :class:`~raytask.server.compat.SavedSettings`; None
            without Ray). A restarted manager takes those over its creation arguments,
            which are the first deploy's.
    """

    def __init__(
        self,
        app_name: str,
        routes: list[EndpointRoute],
        config: AppConfig,
        models: list[tuple[str, type]] | None = None,
        calls: ReplicaCalls | None = None,
        store: Store | None = None,
        settings: compat.SavedSettings | None = None,
    ) -> None:
        self.app_name = app_name
        if settings is None and compat.in_actor():
            settings = compat.SavedSettings(app_name)
        self.settings = settings
        if settings is not None:
            saved = settings.load() if settings.restarted() else None
            if saved is not None:
                routes, config, models = saved
            else:
                _save(settings, (routes, config, models or []))
        self.table = TaskTable(config.max_queue_size, config.retry_after_s)
        self.dispatcher = Dispatcher(self.table)
        self._wake = asyncio.Event()
        self.attempts = Attempts(self.dispatcher, calls or ReplicaCalls(app_name), self._wake.set)
        self.attempts.on_result = self._keep_result
        self.attempts.on_stored = self.table.hold_result
        self.table.on_change = self._changed
        # Long-polls waiting for a task to finish: task id -> (event, waiters).
        self._finish_waits: dict[str, tuple[asyncio.Event, list[int]]] = {}
        self.webhooks = Webhooks(
            config, lambda r: r.state(self.table.position(r)).wire(), self._journal_held
        )
        self._models: list[tuple[str, type]] = models or []
        self._apply(routes, config)
        # An actor never moves: where it started is where it runs (the options pin it).
        self.on_head_node = compat.on_head_node() if ray.is_initialized() else None
        if self.on_head_node is False:
            logger.error("raytask manager of %s is not on the head node", app_name)
        store = store or open_store(config, app_name)
        self.journal = Journal(store) if store is not None else None
        if self.journal is not None:
            self._recover(self.journal)
        self._background = [
            asyncio.create_task(self._forever(self._dispatch, self._wake)),
            asyncio.create_task(self._forever(self.attempts.watch, self.attempts.wake)),
            asyncio.create_task(self._every(lambda: self.config.sweep_interval_s, self.sweep)),
            asyncio.create_task(self._every(lambda: _CAPACITY_REFRESH_S, self._refresh)),
        ]

    def _recover(self, journal: Journal) -> None:
        """Rebuild the table from the journal, before anything else can run."""
        started = time.monotonic()
        records, results, broken = journal.load()
        kept = {}
        for task_id, payload in results.items():
            try:  # small results come back into the object store, owned by this actor
                kept[task_id] = self.attempts.calls.put(cloudpickle.loads(payload))
            except Exception as exc:  # e.g. its class is gone: the task runs again
                logger.warning("raytask: cannot restore the result of %s: %s", task_id, exc)
        outcome = recover(records, self.routes, kept, self.table.clock(), broken)
        self.table.restore(outcome.records)
        self.webhooks.resume(outcome.records)
        self.attempts.results.update(kept)
        self.table.on_forget = journal.forgotten
        journal.rewrite(self.table.get(task_id) for task_id in outcome.changed)
        logger.warning(
            "raytask manager of %s: journal %s: %d tasks back (%d requeued, %d failed) in %.2f s",
            self.app_name,
            journal.store,
            len(outcome.records),
            outcome.requeued,
            outcome.failed,
            time.monotonic() - started,
        )

    def _journal(self, record: TaskRecord) -> None:
        if self.journal is not None:
            self.journal.changed(record)

    def _journal_held(self, record: TaskRecord) -> None:
        # A delivery may end after its task was forgotten at its TTL: journaling it then
        # would bring the task back at the next restart.
        if self.table.endpoint_of(record.task_id) is not None:
            self._journal(record)

    def _changed(self, record: TaskRecord) -> None:
        """Every created or changed task: its webhook event queued, journaled (with the
        event), and a failure logged (once, here, where the reason is known: the
        replica's own log only shows the call)."""
        event = event_of(record.status)
        if event is not None and record.options.webhook_url is not None:
            self.webhooks.fire(record, event)
        self._journal(record)
        if record.status.finished and record.task_id in self._finish_waits:
            self._finish_waits[record.task_id][0].set()
        if record.status is TaskStatus.FAILURE:
            logger.warning(
                "raytask task %s of %s/%s failed (attempt %d of %d): %s",
                record.task_id,
                self.app_name,
                record.endpoint,
                record.attempts,
                record.options.max_attempts,
                record.error,
            )

    def _keep_result(self, task_id: str, value: Any) -> None:
        """Count a small result's bytes and journal it with its success (large ones stay
        in the object store)."""
        self.table.hold_result(task_id, approx_size(value))
        if self.journal is None:
            return
        try:
            payload = cloudpickle.dumps(value)
        except Exception:  # not picklable by value: it runs again if it is lost
            return
        if len(payload) <= self.config.journal_result_bytes:
            self.journal.result(task_id, payload)

    async def _flush(self) -> None:
        if self.journal is not None:
            await self.journal.flush()

    def _apply(self, routes: list[EndpointRoute], config: AppConfig) -> None:
        self.config = config
        self.routes = {r.name: r for r in routes}
        self.table.max_queue_size = config.max_queue_size
        self.table.max_tasks = config.max_tasks
        self.table.max_task_bytes = config.max_task_bytes
        self.table.retry_after_s = config.retry_after_s
        self.dispatcher.configure(routes, config.max_in_flight)
        self.attempts.batch_size = config.dispatch_batch_size
        self.webhooks.configure(config)

    # -- background loops ----------------------------------------------------------

    @staticmethod
    async def _forever(
        step: Callable[[], Coroutine[Any, Any, float | None]], wake: asyncio.Event
    ) -> None:
        """Run ``step`` whenever ``wake`` is set, and again after the seconds it returned
        (None: only when woken). The deadline loop sleeps until the next deadline rather
        than polling while attempts run."""
        delay: float | None = None
        while True:
            try:
                await asyncio.wait_for(wake.wait(), delay)
            except TimeoutError:
                pass
            wake.clear()
            try:
                delay = await step()
            except Exception:  # never let the loop die: try again a little later
                logger.exception("raytask manager loop %s failed", step.__name__)
                delay = 0.5

    @staticmethod
    async def _every(period_s: Callable[[], float], step: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await step()
            except Exception:  # the controller may be restarting: keep the last numbers
                logger.exception("raytask manager step %s failed", step.__name__)
            await asyncio.sleep(period_s())

    def _kick(self) -> None:
        self._wake.set()

    async def _dispatch(self) -> None:
        self.attempts.start()

    async def sweep(self) -> None:
        """Forget tasks past their TTL and drop their results, so Ray frees them (the
        sweep loop calls this every ``sweep_interval_s``)."""
        for task_id in self.table.sweep():
            self.attempts.results.pop(task_id, None)

    async def _refresh(self) -> None:
        try:
            running = await asyncio.to_thread(self.attempts.calls.running_replicas)
        except Exception as exc:  # the controller may be restarting: keep the last numbers
            logger.debug("capacity refresh failed: %s", exc)
            running = {}
        for deployment, replicas in running.items():
            self.dispatcher.set_running_replicas(deployment, replicas)
        self._kick()
        self.attempts.calls.export_metrics(samples(self.dispatcher.snapshot(self.app_name)))

    # -- the API the ingress and the clients call --------------------------------

    async def submit(
        self,
        endpoint: str,
        kwargs: dict[str, Any],
        options: SubmitOptions,
        idempotency_key: str | None = None,
        owner: str | None = None,
    ) -> TaskState | HTTPError:
        """Queue a task; returns its status answer (``pending``, or with a known
        ``idempotency_key`` the answer of the task it named). ``owner``: see
        ``token_isolation``."""
        (answer,) = await self.submit_many([(endpoint, kwargs, options, idempotency_key, owner)])
        return answer

    async def submit_many(self, items: list[tuple[Any, ...]]) -> list[TaskState | HTTPError]:
        """Queue several tasks: ``(endpoint, kwargs, options[, idempotency key[, owner]])``
        each.
        One answer per item, in order: its status answer, or its error (a full queue
        refuses the items past its room, not the whole call)."""
        answers = _each(items, lambda item: self._submit_one(*item))
        self._kick()
        try:
            await self._flush()  # a task id goes out only once its task is journaled
        except HTTPError as exc:  # the journal failed: no id goes out
            return [exc] * len(items)
        return answers

    def _options(self, endpoint: str, options: SubmitOptions) -> TaskOptions:
        route = self.routes.get(endpoint)
        if route is None:
            raise TaskFailedError(f"the task manager has no endpoint {endpoint!r}")
        self.config.check_submit(options)
        return options.apply(route.options)

    def _submit_one(
        self,
        endpoint: str,
        kwargs: dict[str, Any],
        options: SubmitOptions,
        idempotency_key: str | None = None,
        owner: str | None = None,
    ) -> TaskState:
        record = self.table.submit(
            endpoint,
            kwargs,
            self._options(endpoint, options),
            idempotency_key=idempotency_key,
            owner=owner,
        )
        return self.table.state(record.task_id)

    @_errors_as_values
    async def submit_batch(
        self,
        endpoint: str,
        inputs: list[dict[str, Any]],
        options: SubmitOptions,
        owner: str | None = None,
    ) -> list[TaskState]:
        """Queue one task per input, all or none (``POST /NAME/submit_many``)."""
        records = self.table.submit_many(endpoint, inputs, self._options(endpoint, options), owner)
        self._kick()
        await self._flush()
        return [self.table.state(record.task_id) for record in records]

    @_errors_as_values
    async def status(self, task_id: str) -> TaskState:
        """The status answer of a task."""
        (answer,) = await self.status_many([task_id])
        return unwrap(answer)

    async def status_many(self, task_ids: list[str]) -> list[TaskState | HTTPError]:
        """The status answers (or errors) of several tasks, in order (never a state the
        journal does not hold yet)."""
        if self.journal is not None and any(map(self.journal.pending, task_ids)):
            try:
                await self.journal.flush()
            except HTTPError as exc:
                return [exc] * len(task_ids)
        return _each(task_ids, self.table.state)

    @_errors_as_values
    async def wait(self, task_id: str, wait_s: float) -> TaskState:
        """The status answer once the task has finished, or after ``wait_s`` seconds
        (long-poll): the call waits on the task's own notification, set by the change that
        finishes it, never by polling."""
        if not self.table.get(task_id).status.finished:
            event, waiters = self._finish_waits.setdefault(task_id, (asyncio.Event(), [0]))
            waiters[0] += 1
            try:
                await asyncio.wait_for(event.wait(), wait_s)
            except TimeoutError:
                pass
            finally:
                waiters[0] -= 1
                if not waiters[0]:
                    self._finish_waits.pop(task_id, None)
        return await self.status(task_id)

    @_errors_as_values
    async def result(self, task_id: str) -> list[ray.ObjectRef]:
        """``[result]`` of a successful task: a small value as it is, a large one as the
        ``ObjectRef`` the caller fetches."""
        self.table.check_result(task_id)
        return [self.attempts.results[task_id]]

    @_errors_as_values
    async def cancel(self, task_id: str) -> TaskState:
        """Cancel a pending task, or stop a running one (its slot frees when the replica
        confirms)."""
        self._cancel_one(task_id)
        await self._flush()
        return self.table.state(task_id)

    def _cancel_one(self, task_id: str) -> TaskState:
        if self.table.cancel(task_id) is TaskStatus.IN_PROGRESS:
            self.attempts.stop(task_id)
        return self.table.state(task_id)

    async def cancel_many(
        self,
        task_ids: list[str] | None = None,
        statuses: list[str] | None = None,
        endpoint: str | None = None,
        owner: str | None = None,
    ) -> int:
        """Cancel the tasks ``task_ids`` (those of ``endpoint``, if given), or else every
        task in ``statuses`` (``pending``, ``in_progress``) of ``endpoint`` or of the whole
        app; unknown and finished ones, and with an ``owner`` those of others, are
        skipped. Returns how many were cancelled."""
        if task_ids is None:
            task_ids = self.table.ids_in(map(TaskStatus, statuses or ()), endpoint)
        elif endpoint is not None:
            task_ids = [t for t in task_ids if self.table.endpoint_of(t) == endpoint]
        if owner is not None:
            task_ids = [t for t in task_ids if self.table.owner_of(t) == owner]
        answers = _each(task_ids, self._cancel_one)
        await self._flush()  # one journal write for them all
        return sum(1 for answer in answers if isinstance(answer, TaskState))

    @_errors_as_values
    async def retry(self, task_id: str) -> TaskState:
        """Queue a new task with the inputs of a finished one."""
        record = self.table.retry(task_id)
        self._kick()
        await self._flush()
        return self.table.state(record.task_id)

    @_errors_as_values
    async def list_tasks(
        self,
        endpoint: str | None = None,
        statuses: list[str] | None = None,
        limit: int = 100,
        cursor: int | None = None,
        owner: str | None = None,
    ) -> tuple[list[TaskState], int | None]:
        """A page of status answers, newest first, and the next page's cursor (None at
        the end): ``GET /NAME/tasks`` and ``GET /tasks`` (only ``owner``'s, if given)."""
        await self._flush()  # no state the journal does not hold yet
        wanted = None if statuses is None else [TaskStatus(s) for s in statuses]
        records, next_cursor = self.table.list(endpoint, wanted, limit, cursor, owner)
        return [r.state(self.table.position(r)) for r in records], next_cursor

    async def report_progress(
        self, task_id: str, attempt_no: int, fraction: float | None, message: str | None
    ) -> None:
        """A running attempt's progress (from :func:`raytask.report_progress`)."""
        if self.table.report_progress(task_id, attempt_no, fraction, message):
            record = self.table.get(task_id)
            if record.options.webhook_url is not None:
                self.webhooks.fire(record, "progress")
                self._journal(record)

    async def batch_stops(self, batch_id: int, seen: int) -> list[str] | None:
        """The tasks a replica must stop in batch ``batch_id`` past the first ``seen``
        (a long-poll; None once the batch is over): see :mod:`raytask.server.batch`."""
        return await self.attempts.stops(batch_id, seen)

    async def configure(
        self, routes: list[EndpointRoute], config: AppConfig, models: list[tuple[str, type]]
    ) -> None:
        """Take new endpoints and settings (a redeployed app's ingress calls this); they
        are kept for a restart of this actor before the call returns."""
        self._apply(routes, config)
        self._models = models
        if self.settings is not None:
            await asyncio.to_thread(_save, self.settings, (routes, config, models))
        try:
            self.attempts.calls.warm(self.dispatcher.deployments)
        except Exception as exc:  # a private Serve API: the first call still works
            logger.warning("could not warm the model handles: %s", exc)
        self._kick()

    async def models(self) -> list[tuple[str, type]]:
        """``(deployment name, class)`` of each model (in-cluster clients validate with them)."""
        return self._models

    async def depth(self) -> dict[str, dict[str, int]]:
        """Per model deployment: tasks pending in the queue and in flight (for autoscaling)."""
        return self.dispatcher.depth()

    async def queue(self) -> dict[str, Any]:
        """The ``GET /queue`` answer (see :meth:`Dispatcher.snapshot`)."""
        return self.dispatcher.snapshot(self.app_name)

    async def shutdown(self) -> None:
        """Stop the background loops and close the journal's store (Ray ends them with
        the actor; tests call this)."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.attempts.close()
        await self.webhooks.close()
        if self.journal is not None:
            await self.journal.close()

    async def ping(self) -> bool:
        """Liveness for the ingress's /readyz (cheap, unlike :meth:`stats`)."""
        return True

    async def stats(self) -> dict[str, Any]:
        """Numbers for operators and tests: pid, RSS, queue depth, in-flight, counts, and
        the batches dispatched (``dispatched``: batches and the attempts they held)."""
        return {
            "pid": os.getpid(),
            "rss_bytes": _rss_bytes(),
            "pending": self.table.pending_count,
            "in_flight": {d: self.dispatcher.in_flight(d) for d in self.dispatcher.deployments},
            "capacity": {d: self.dispatcher.limit(d) for d in self.dispatcher.deployments},
            "results_held": len(self.attempts.results),
            "dispatched": dict(self.attempts.sent),
            "counts": self.table.counts(),
            "on_head_node": self.on_head_node,
            "journal": None if self.journal is None else str(self.journal.store),
            "journal_commits": 0 if self.journal is None else self.journal.commits,
            "env": {name: os.environ.get(name) for name in compat.ROUTER_IN_CALLER_LOOP_ENV},
        }


def _save(settings: compat.SavedSettings, value: Any) -> None:
    """Keep the latest settings for a restart; a failure costs only that (and says so)."""
    try:
        settings.save(value)
    except Exception as exc:
        logger.error(
            "raytask manager: cannot keep the latest settings for a restart (%s): after a "
            "crash it would serve its first deploy's endpoints until the next deploy",
            exc,
        )


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def get_or_create_manager(
    app_name: str,
    routes: list[EndpointRoute],
    config: AppConfig,
    models: list[tuple[str, type]],
) -> Any:
    """The app's manager actor, created detached on first use (safe to race)."""
    return (
        ray.remote(TaskManager)
        .options(
            name=manager_name(app_name),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            num_cpus=0,
            # On the head node, as Serve's controller: the SQLite journal is on its disk,
            # and a worker node the autoscaler removes would take the manager with it
            # (it reserves no CPU, so its node looks idle).
            resources={compat.HEAD_NODE_RESOURCE: 0.001},
            max_concurrency=10_000,
            runtime_env={"env_vars": compat.ROUTER_IN_CALLER_LOOP_ENV},
        )
        .remote(app_name, routes, config, models)
    )
