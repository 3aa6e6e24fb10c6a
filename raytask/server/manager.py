"""The task manager: one detached, named Ray actor per application.

A shell around the Ray-free :class:`~raytask.server.service.TaskService`, which holds the
tasks and answers every command (the HTTP test tier runs the same class in process). The
actor adds what needs Ray: :class:`~raytask.server.attempts.Attempts` sending the
dispatcher's batches to replicas through :class:`~raytask.server.calls.ReplicaCalls`, four
background loops (dispatch, attempt deadlines, TTL sweep, capacity and metrics), started
once in its constructor, the settings kept in Ray's GCS for a restart, and the Ray calls
themselves: each command of :data:`COMMANDS` returns a raytask error as a value instead of
raising it, so the ingress gets a cheap answer rather than a Ray traceback.

It owns the ``ObjectRef`` of every large result without ever deserialising it, and drops
results at their TTL so Ray frees them. Every change a client is told of is journaled
before the answer goes out, and the constructor rebuilds the table from the journal (see
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
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import ray

from ..core.config import AppConfig
from ..core.dispatcher import EndpointRoute
from ..core.endpoint import Endpoint, discover
from ..core.errors import HTTPError, ServiceUnavailableError
from ..core.metrics import samples
from ..core.names import NAMESPACE, manager_name
from . import compat
from .attempts import Attempts
from .calls import ReplicaCalls
from .jobs import JOB_COMMANDS, Jobs
from .journal import Journal, Store, open_store
from .service import TaskService
from .stores import raytask_home

logger = logging.getLogger("raytask.manager")

_CAPACITY_REFRESH_S = 2.0

COMMANDS = (
    "submit",
    "submit_each",
    "submit_many",
    "status",
    "status_many",
    "wait",
    "stream",
    "cancel",
    "cancel_many",
    "delete_many",
    "retry",
    "list_tasks",
    "report_progress",
    "queue",
    "usage",
    "depth",
    "changes",
)
"""The :class:`TaskService` commands the actor serves as they are (errors as values)."""


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
        self.started_at = time.time()  # wall clock: a benchmark compares it with a kill
        if settings is None and compat.in_actor():
            settings = compat.SavedSettings(app_name)
        self.settings = settings
        if settings is not None:
            saved = settings.load() if settings.restarted() else None
            if saved is not None:
                routes, config, models = saved
            else:
                _save(settings, (routes, config, models or []))
        self._models: list[tuple[str, type]] = models or []
        self.served: Counter[str] = Counter()  # the calls it answered, by method (stats)
        self._wake = asyncio.Event()
        self.calls = calls or ReplicaCalls(app_name)
        store = store or open_store(config, app_name)
        journal = Journal(store) if store is not None else None
        self.service = TaskService(app_name, routes, config, journal, self._stop, self._wake.set)
        if settings is not None:  # a manager before this one may have had copies following
            self.service.feed.quiet()
        self.attempts = Attempts(
            self.service.dispatcher, self.calls, self._wake.set, self.service.report_progress
        )
        self.attempts.configure(config)
        # An actor never moves: where it started is where it runs (the options pin it).
        self.on_head_node = compat.on_head_node() if ray.is_initialized() else None
        if self.on_head_node is False:
            logger.error("raytask manager of %s is not on the head node", app_name)
        self.service.recover(self.calls.put)  # before anything else can run
        root = Path(config.batch_dir or raytask_home() / "files" / app_name).expanduser()
        self.jobs: Jobs | None = None
        self._jobs_error = ""
        try:  # a batch folder it cannot write costs the batch jobs, not the app
            self.jobs = Jobs(
                self.service, root, _endpoints(self._models, config), self._wake.set, _fetch
            )
            self.jobs.start()  # unfinished batch jobs go on where they committed
        except OSError as exc:
            self._jobs_error = f"batch jobs are unavailable: {root}: {exc}"
            logger.error("raytask manager of %s: %s", app_name, self._jobs_error)
        self._background = [
            asyncio.create_task(_forever(self._dispatch, self._wake)),
            asyncio.create_task(_forever(self.attempts.watch, self.attempts.wake)),
            asyncio.create_task(_every(lambda: self.service.config.sweep_interval_s, self.sweep)),
            asyncio.create_task(_every(lambda: _CAPACITY_REFRESH_S, self._refresh)),
        ]
        self.ready_s = time.time() - self.started_at

    def _stop(self, task_id: str) -> None:
        self.attempts.stop(task_id)

    async def _dispatch(self) -> None:
        self.attempts.start()

    async def sweep(self) -> None:
        """Forget tasks past their TTL with their results, so Ray frees them, and drop
        uploads left idle (the sweep loop calls this every ``sweep_interval_s``)."""
        self.service.sweep()
        if self.jobs is not None:
            self.jobs.files.drop_idle()

    async def _refresh(self) -> None:
        try:
            running = await asyncio.to_thread(self.calls.running_replicas)
        except Exception as exc:  # the controller may be restarting: keep the last numbers
            logger.debug("capacity refresh failed: %s", exc)
            running = {}
        for deployment, replicas in running.items():
            self.service.dispatcher.set_running_replicas(deployment, replicas)
        self._wake.set()
        self.calls.export_metrics(samples(self.service.dispatcher.snapshot(self.service.app_name)))

    # -- the calls beside the service's commands -----------------------------------

    async def result(
        self,
        task_id: str,
        owner: str | None = None,
        endpoint: str | None = None,
        wait_s: float = 0.0,
    ) -> list[Any] | HTTPError:
        """``[result]`` of a successful task: a small value as it is, a large one as the
        ``ObjectRef`` the caller fetches (in a list, so Ray hands the ref over as it is);
        ``wait_s``: once it has finished, or after that long."""
        self.served["result"] += 1
        try:
            return [await self.service.result(task_id, owner, endpoint, wait_s)]
        except HTTPError as exc:
            return exc

    async def batch_stops(self, batch_id: int, seen: int) -> list[str] | None:
        """The tasks a replica must stop in batch ``batch_id`` past the first ``seen``
        (a long-poll; None once the batch is over): see :mod:`raytask.server.batch`."""
        return await self.attempts.stops(batch_id, seen)

    async def configure(
        self, routes: list[EndpointRoute], config: AppConfig, models: list[tuple[str, type]]
    ) -> None:
        """Take new endpoints and settings (a redeployed app's ingress calls this); they
        are kept for a restart of this actor before the call returns."""
        self.service.configure(routes, config)
        self.attempts.configure(config)
        self._models = models
        if self.jobs is not None:
            self.jobs.configure(_endpoints(models, config), config)
        if self.settings is not None:
            await asyncio.to_thread(_save, self.settings, (routes, config, models))
        try:
            self.calls.warm(self.service.dispatcher.deployments)
        except Exception as exc:  # a private Serve API: the first call still works
            logger.warning("could not warm the model handles: %s", exc)
        self._wake.set()

    async def job(self, command: str, *args: Any) -> Any:
        """A batch job command (SPEC 11, :data:`~raytask.server.jobs.JOB_COMMANDS`), errors
        as values: the ``/v1`` routes of every ingress replica call this."""
        self.served["job"] += 1
        if command not in JOB_COMMANDS:
            return HTTPError(f"no batch job command {command!r}")
        if self.jobs is None:
            return ServiceUnavailableError(self._jobs_error)
        try:
            return await getattr(self.jobs, command)(*args)
        except HTTPError as exc:
            return exc

    async def models(self) -> list[tuple[str, type]]:
        """``(deployment name, class)`` of each model (in-cluster clients validate with them)."""
        return self._models

    async def shutdown(self) -> None:
        """Stop the background loops, then the attempts, webhooks and journal (Ray ends
        them with the actor; tests call this)."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.jobs is not None:
            await self.jobs.close()
        await self.attempts.close()
        await self.service.close()

    async def ping(self) -> bool:
        """Liveness for the ingress's /readyz (cheap, unlike :meth:`stats`)."""
        return True

    async def stats(self) -> dict[str, Any]:
        """Numbers for operators and tests: pid, RSS, queue, in-flight, counts, batches sent
        (``dispatched``), the constructor's start (``started_at``) and seconds (``ready_s``)."""
        table, dispatcher, journal = (
            self.service.table,
            self.service.dispatcher,
            self.service.journal,
        )
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "ready_s": self.ready_s,
            "rss_bytes": _rss_bytes(),
            "pending": table.pending_count,
            "in_flight": {d: dispatcher.in_flight(d) for d in dispatcher.deployments},
            "capacity": {d: dispatcher.limit(d) for d in dispatcher.deployments},
            "results_held": table.results_held,
            "dispatched": dict(self.attempts.sent),
            "counts": table.counts(),
            "on_head_node": self.on_head_node,
            "journal": None if journal is None else str(journal.store),
            "journal_commits": 0 if journal is None else journal.commits,
            "journal_bytes": 0 if journal is None else journal.bytes,
            "calls": dict(self.served),
            "copies": self.service.feed.subscribers,
            "env": {name: os.environ.get(name) for name in compat.ROUTER_IN_CALLER_LOOP_ENV},
        }


def _command(name: str) -> Callable[..., Awaitable[Any]]:
    """The actor method for the service's command ``name``: errors as values."""

    @functools.wraps(getattr(TaskService, name))
    async def command(self: TaskManager, *args: Any, **kwargs: Any) -> Any:
        self.served[name] += 1
        try:
            return await getattr(self.service, name)(*args, **kwargs)
        except HTTPError as exc:
            return exc

    return command


for _name in COMMANDS:
    setattr(TaskManager, _name, _command(_name))


async def _forever(
    step: Callable[[], Coroutine[Any, Any, float | None]], wake: asyncio.Event
) -> None:
    """Run ``step`` whenever ``wake`` is set, and again after the seconds it returned
    (None: only when woken). The deadline loop sleeps until the next deadline rather than
    polling while attempts run."""
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


async def _every(period_s: Callable[[], float], step: Callable[[], Awaitable[None]]) -> None:
    while True:
        try:
            await step()
        except Exception:  # the controller may be restarting: keep the last numbers
            logger.exception("raytask manager step %s failed", step.__name__)
        await asyncio.sleep(period_s())


def _endpoints(models: list[tuple[str, type]], config: AppConfig) -> dict[str, Endpoint]:
    """The app's endpoints by name (batch jobs check their lines with their input models)."""
    return {e.name: e for name, cls in models for e in discover(cls, name, config.task_defaults)}


async def _fetch(ref: Any) -> Any:
    """A large result's value, from the object store (a batch job writes it out)."""
    return await ref


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
