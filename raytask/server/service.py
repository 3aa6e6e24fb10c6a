"""The task service: every command of a raytask app's tasks, without Ray.

:class:`TaskService` holds the :class:`~raytask.core.table.TaskTable`, the
:class:`~raytask.core.dispatcher.Dispatcher`, the :class:`~raytask.server.journal.Journal`
and the webhooks, and answers the commands the routes and the clients send (submit,
submit_many, submit_each, status, wait, result, cancel, retry, listing, progress). The task
manager actor (:mod:`raytask.server.manager`) is a shell around it that adds Ray: its
background loops, the attempts it sends to replicas, and the Ray calls themselves. The HTTP
test tier runs the real routes over this same class in process, so every rule here is
tested by the fast tiers too.

Commands raise :class:`~raytask.core.errors.HTTPError` subclasses; the actor turns them
into values for its callers. Every change a client is told of is journaled before the
answer goes out (``await self._flush()``), and every status change goes through the table
(:meth:`~raytask.core.record.TaskRecord.move`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..core.chunks import ChunkLog
from ..core.config import AppConfig, SubmitOptions, TaskOptions
from ..core.dispatcher import Dispatcher, EndpointRoute
from ..core.errors import (
    HTTPError,
    TaskExpiredError,
    TaskFailedError,
    each,
    unwrap,
)
from ..core.feed import ChangeFeed, Entry, Group, copied_result
from ..core.messages import StreamRead, Submit, seen_by
from ..core.queue import ANONYMOUS
from ..core.state import TaskState
from ..core.status import TaskStatus
from ..core.table import Clock, TaskRecord, TaskTable
from ..core.usage import UsageQuery
from ..core.waits import Waits
from ..core.webhooks import event_of
from .journal import Journal, result_payload
from .reload import reload
from .streams import StreamReads, log_failure
from .webhooks import Webhooks

logger = logging.getLogger("raytask.manager")


def _ignore(_: str) -> None:
    pass


class TaskService:
    """The tasks of one app and the commands on them.

    Args:
        app_name: the Serve application it serves.
        routes: its task endpoints.
        config: app-wide settings.
        journal: where changes go before a client is told (None: ``journal: off``).
        stop: stops a running attempt on its replica (the actor's attempts; a cancel of a
            running task calls it).
        kick: called when there may be work to dispatch.
        clock: epoch seconds (tests pass a fake).
    """

    def __init__(
        self,
        app_name: str,
        routes: list[EndpointRoute],
        config: AppConfig,
        journal: Journal | None = None,
        stop: Callable[[str], None] = _ignore,
        kick: Callable[[], None] = lambda: None,
        clock: Clock = time.time,
    ) -> None:
        self.app_name = app_name
        self.journal = journal
        self._stop, self._kick = stop, kick
        self.feed = ChangeFeed(self._entry, self._chunks)  # the ingress replicas' copies
        self.table = TaskTable(
            config.max_queue_size,
            config.retry_after_s,
            clock=clock,
            on_change=self._changed,
            on_forget=self._forget,
        )
        self.dispatcher = Dispatcher(self.table)
        self.streams = StreamReads(self.table)
        self.on_job_line: Callable[[TaskRecord], None] = lambda record: None  # batch jobs'
        self._finish_waits = Waits()  # long-polls waiting for a task to finish
        self.webhooks = Webhooks(config, lambda r: self.table.answer(r).wire(), self._journal_held)
        if journal is not None:  # usage rows go with the task rows that finish them
            journal.attach(self.table.usage)
        self.configure(routes, config)

    def configure(self, routes: list[EndpointRoute], config: AppConfig) -> None:
        """Take new endpoints and settings (a redeploy)."""
        self.config = config
        self.routes = {r.name: r for r in routes}
        self.table.max_queue_size = config.max_queue_size
        self.table.max_tasks = config.max_tasks
        self.table.max_task_bytes = config.max_task_bytes
        self.table.retry_after_s = config.retry_after_s
        self.table.quotas.configure(config.tenants)
        self.dispatcher.configure(routes, config.max_in_flight)
        self.webhooks.configure(config)

    # -- what changes tell ---------------------------------------------------------

    def _changed(self, record: TaskRecord) -> None:
        """Every created or changed task: its webhook event queued, journaled (a success
        with its result, in the same row), waiters woken, and a failure logged (once,
        here, where the reason is known: the replica's own log only shows the call)."""
        event = event_of(record.status) or self.streams.output_due(record)
        if event is not None and record.options.webhook_url is not None:
            self.webhooks.fire(record, event)
        if record.job is not None:  # a batch job's line: its job's files record it
            if record.status.finished:
                self.on_job_line(record)
        else:  # (a batch line's state is read from the manager, never from a copy)
            self.feed.changed(record.task_id)
            if self.journal is not None:
                payload = result_payload(record, self.config.journal_result_bytes)
                self.journal.changed(record, payload)
        if record.status.finished:
            self._finish_waits.wake(record.task_id)
        self.streams.changed(record.task_id)
        log_failure(self.app_name, record)

    def _journal_held(self, record: TaskRecord) -> None:  # a late delivery revives no task
        if self.table.endpoint_of(record.task_id) is not None:
            self.feed.changed(record.task_id)
            if self.journal is not None:
                self.journal.changed(record)

    def _forget(self, task_id: str) -> None:
        self.feed.changed(task_id)  # copies drop it
        if self.journal is not None:
            self.journal.forgotten(task_id)

    def _entry(self, task_id: str) -> Entry | None:
        """A task as the ingress replicas' copies hold it (see :mod:`raytask.core.feed`)."""
        record = self.table.find(task_id)  # (not get: a feed's read must change nothing)
        if record is None:  # forgotten since
            return None
        now = self.table.clock()
        return Entry(record.state(None, now), now, record.gpus, copied_result(record))

    def _chunks(self, task_id: str) -> ChunkLog | None:
        record = self.table.find(task_id)
        return None if record is None else record.chunks

    async def changes(self, subscriber: str, epoch: str | None, since: int) -> Group:
        """The changes an ingress replica's copy has not seen (a long-poll; see
        :meth:`ChangeFeed.poll`), once the journal holds them: a copy answers clients."""
        group = await self.feed.poll(subscriber, epoch, since)
        if self.journal is not None and any(map(self.journal.pending, group.entries)):
            await self.journal.flush()  # (it fails the poll if the write fails)
        return group

    def _kick_after(self) -> None:
        """Kick the dispatcher once the command has answered (dispatching shares the loop)."""
        asyncio.get_running_loop().call_soon(self._kick)

    async def _flush(self) -> None:
        if self.journal is not None:
            await self.journal.flush()

    def recover(self, restore: Callable[[Any], Any] = lambda value: value) -> None:
        """Rebuild the table from the journal, before anything else runs; ``restore``
        puts a journaled result back where results live (the actor: the object store)."""
        if self.journal is not None:
            reload(self, self.journal, restore)

    # -- submitting ----------------------------------------------------------------

    def _options(self, endpoint: str, options: SubmitOptions) -> TaskOptions:
        route = self.routes.get(endpoint)
        if route is None:
            raise TaskFailedError(f"the task manager has no endpoint {endpoint!r}")
        self.config.check_submit(options)
        return options.apply(route.options)

    def _submit_one(self, item: Submit) -> TaskState:
        record = self.table.submit(
            item.endpoint,
            item.kwargs,
            self._options(item.endpoint, item.options),
            idempotency_key=item.idempotency_key,
            owner=item.owner,
            tenant=item.tenant,
        )
        return self.table.state(record.task_id)

    async def submit(self, item: Submit) -> TaskState:
        """Queue a task; its status answer (``pending``, or with a known idempotency key
        the answer of the task it named)."""
        (answer,) = await self.submit_each([item])
        return unwrap(answer)

    async def submit_each(self, items: list[Submit]) -> list[TaskState | HTTPError]:
        """Queue independent submits that arrived together (the ingress and the async
        in-cluster client coalesce concurrent ones): one answer or error per item, in
        order; a full queue refuses the items past its room, not the others."""
        answers = each(items, self._submit_one)
        try:
            await self._flush()  # a task id goes out only once its task is journaled
        except HTTPError as exc:  # the journal failed: no id goes out
            return [exc] * len(items)
        finally:
            self._kick_after()
        return answers

    async def submit_many(
        self,
        endpoint: str,
        inputs: list[dict[str, Any]],
        options: SubmitOptions,
        owner: str | None = None,
        tenant: str = ANONYMOUS,
    ) -> list[TaskState]:
        """Queue one task per input, all or none: the status answers, in input order."""
        task_options = self._options(endpoint, options)
        records = self.table.submit_many(endpoint, inputs, task_options, owner, tenant)
        self._kick()  # (a bulk submit: dispatching meanwhile beats a faster answer)
        await self._flush()
        return [self.table.state(record.task_id) for record in records]

    # -- reading -------------------------------------------------------------------

    def _visible(self, task_id: str, owner: str | None, endpoint: str | None) -> TaskRecord:
        """The record of ``task_id``, if ``owner`` may see it under ``endpoint``'s routes
        (see :func:`seen_by`)."""
        try:
            record = self.table.get(task_id)
        except TaskExpiredError as exc:
            unwrap(seen_by(owner, task_id, exc))  # another's: 404
            raise
        return unwrap(seen_by(owner, task_id, record, endpoint))

    async def status(
        self, task_id: str, owner: str | None = None, endpoint: str | None = None
    ) -> TaskState:
        """The status answer of a task (``owner``: of one of theirs, ``endpoint``: of one
        of its tasks, else 404)."""
        (answer,) = await self.status_many([task_id])
        return unwrap(seen_by(owner, task_id, answer, endpoint))

    async def status_many(
        self, task_ids: list[str], owner: str | None = None
    ) -> list[TaskState | HTTPError]:
        """The status answers (or errors) of several tasks, in order (never a state the
        journal does not hold yet; ``owner``: another's task is 404)."""
        if self.journal is not None and any(map(self.journal.pending, task_ids)):
            try:
                await self.journal.flush()
            except HTTPError as exc:
                return [exc] * len(task_ids)
        answers = each(task_ids, self.table.state)
        return [seen_by(owner, t, a) for t, a in zip(task_ids, answers, strict=True)]

    async def wait(
        self,
        task_id: str,
        wait_s: float,
        owner: str | None = None,
        endpoint: str | None = None,
    ) -> TaskState:
        """The status answer once the task has finished, or after ``wait_s`` seconds
        (long-poll): the call waits on the task's own notification, set by the change that
        finishes it, never by polling."""
        if not self._visible(task_id, owner, endpoint).status.finished:
            await self._finish_waits.wait(task_id, wait_s)
        return await self.status(task_id, owner, endpoint)

    async def stream(
        self,
        task_id: str,
        start: int = 0,
        attempt: int | None = None,
        wait_s: float = 15.0,
        owner: str | None = None,
        endpoint: str | None = None,
    ) -> StreamRead:
        """What a stream reader has not seen yet (see :meth:`StreamReads.read`)."""
        self._visible(task_id, owner, endpoint)
        await self._flush()  # no chunk the journal does not hold yet
        return await self.streams.read(task_id, start, attempt, wait_s)

    async def result(
        self,
        task_id: str,
        owner: str | None = None,
        endpoint: str | None = None,
        wait_s: float = 0.0,
    ) -> Any:
        """A successful task's result: a small value as it is, a large one as the
        ``ObjectRef`` that holds it; ``wait_s``: once the task has finished, or after that
        long (one call for a waiting get)."""
        if wait_s:
            await self.wait(task_id, wait_s, owner, endpoint)
        self._visible(task_id, owner, endpoint)
        record = self.table.check_result(task_id)
        if record.result is None:  # a success always keeps one: never expected
            raise TaskFailedError(f"task {task_id} succeeded but its result is gone")
        value = record.result.value
        return value.values() if isinstance(value, ChunkLog) else value

    async def list_tasks(
        self,
        endpoint: str | None,
        statuses: list[str] | None,
        limit: int,
        cursor: int | None,
        owner: str | None = None,
    ) -> tuple[list[TaskState], int | None]:
        """A page of status answers, newest first, and the next page's cursor (None at
        the end): ``GET /NAME/tasks`` and ``GET /tasks`` (only ``owner``'s, if given)."""
        await self._flush()  # no state the journal does not hold yet
        wanted = None if statuses is None else [TaskStatus(s) for s in statuses]
        records, next_cursor = self.table.list(endpoint, wanted, limit, cursor, owner)
        return [self.table.answer(r) for r in records], next_cursor

    async def queue(self) -> dict[str, Any]:
        """``GET /queue``: :meth:`Dispatcher.snapshot` plus the tenants, computed only here."""
        return self.dispatcher.snapshot(self.app_name) | {"tenants": self.table.tenant_stats()}

    async def usage(self, query: UsageQuery) -> list[dict[str, Any]]:
        """The ``GET /usage`` rows (see :meth:`raytask.core.usage.Usage.query`)."""
        return self.table.usage.query(query)

    async def depth(self) -> dict[str, dict[str, int]]:
        """Per model deployment: tasks pending in the queue and in flight (for autoscaling)."""
        return self.dispatcher.depth()

    # -- control -------------------------------------------------------------------

    def _cancel_one(self, task_id: str) -> TaskState:
        if self.table.cancel(task_id) is TaskStatus.IN_PROGRESS:
            self._stop(task_id)  # its slot frees when the replica confirms
        return self.table.state(task_id)

    async def cancel(
        self, task_id: str, owner: str | None = None, endpoint: str | None = None
    ) -> TaskState:
        """Cancel a pending task, or stop a running one."""
        self._visible(task_id, owner, endpoint)
        self._cancel_one(task_id)
        await self._flush()
        await self.feed.synced()  # every replica's copy holds it before the answer
        return self.table.state(task_id)

    async def cancel_many(
        self,
        endpoint: str | None,
        task_ids: list[str] | None,
        statuses: list[str] | None,
        owner: str | None = None,
    ) -> int:
        """Cancel the tasks ``task_ids`` of ``endpoint`` (None: of any endpoint), or else
        every task of it in ``statuses`` (``pending``, ``in_progress``); unknown and
        finished ones, other endpoints' and, with an ``owner``, other owners' are skipped.
        Returns how many were cancelled."""
        if task_ids is None:
            task_ids = self.table.ids_in(map(TaskStatus, statuses or ()), endpoint)
        elif endpoint is not None:
            task_ids = [t for t in task_ids if self.table.endpoint_of(t) == endpoint]
        if owner is not None:
            task_ids = [t for t in task_ids if self.table.owner_of(t) == owner]
        answers = each(task_ids, self._cancel_one)
        await self._flush()  # one journal write for them all
        await self.feed.synced()
        return sum(1 for answer in answers if isinstance(answer, TaskState))

    async def delete_many(
        self,
        endpoint: str | None,
        task_ids: list[str] | None,
        status: str | None = None,
        older_than_s: float = 0.0,
        owner: str | None = None,
    ) -> tuple[int, int]:
        """Delete finished tasks of ``endpoint`` (None: of any endpoint) that finished
        ``older_than_s`` ago or more: ``task_ids``, or else every task in ``status`` (a
        finished one). Their results are freed and their journal rows removed; their ids answer 404
        after. Returns ``(deleted, skipped)``: the given ids not deleted (unfinished,
        unknown, another endpoint's or another owner's) are skipped."""
        before = self.table.clock() - older_than_s
        if task_ids is None:
            wanted = self.table.finished_before(TaskStatus(status), before, endpoint)
            wanted = [t for t in wanted if owner is None or self.table.owner_of(t) == owner]
            given = len(wanted)
        else:
            given = len(task_ids)
            wanted = [
                t for t in dict.fromkeys(task_ids) if self._deletable(t, owner, endpoint, before)
            ]
        deleted = len(self.table.delete(wanted))
        await self._flush()  # the rows are gone before the answer says so
        await self.feed.synced()  # and from every replica's copy
        return deleted, given - deleted

    def _deletable(
        self, task_id: str, owner: str | None, endpoint: str | None, before: float
    ) -> bool:
        try:
            record = self._visible(task_id, owner, endpoint)
        except HTTPError:
            return False
        return (record.completed_at or before + 1) <= before

    async def retry(
        self, task_id: str, owner: str | None = None, endpoint: str | None = None
    ) -> TaskState:
        """Queue a new task with the inputs of a finished one."""
        self._visible(task_id, owner, endpoint)
        record = self.table.retry(task_id)
        self._kick()
        await self._flush()
        return self.table.state(record.task_id)

    async def report_progress(
        self, task_id: str, attempt_no: int, fraction: float | None, message: str | None
    ) -> None:
        """A running attempt's progress (from :func:`raytask.report_progress`)."""
        if self.table.report_progress(task_id, attempt_no, fraction, message):
            record = self.table.get(task_id)
            if record.options.webhook_url is not None:
                self.webhooks.fire(record, "progress")
                self._journal_held(record)  # (which feeds it to the copies too)
            else:
                self.feed.changed(task_id)

    def sweep(self) -> list[str]:
        """Forget tasks past their TTL (their results go with them, so Ray frees them)."""
        self.table.usage.prune(self.table.clock())
        return self.table.sweep()

    async def close(self) -> None:
        """Stop the webhooks and close the journal once its write is done."""
        await self.webhooks.close()
        if self.journal is not None:
            await self.journal.close()
