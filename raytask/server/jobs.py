"""Batch jobs in the task manager (SPEC §11): a file of requests in, files of results out.

:class:`Jobs` runs beside the :class:`~raytask.server.service.TaskService`, without Ray
(the HTTP test tier runs it in process). A job's lines run as ordinary tasks of its
endpoint, at the job's priority (-1 by default: below interactive tasks), so they share
replicas, batching, attempts and autoscaling with everything else; a job never has more than
``batch_window`` of them in the table at once, and feeds more as they finish.

Durability does not go through the task journal, so a million-line job costs the journal
nothing per line: a job's files record it (:mod:`raytask.server.jobstate`), and its line
tasks are never journaled (``TaskRecord.job``). They are deleted from the table once their
line is written. A restarted manager goes on from a job's last commit: a finished line is
never run again, and a line cut mid-run runs again (at least once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..core.chunks import ChunkLog
from ..core.config import SubmitOptions
from ..core.endpoint import Endpoint
from ..core.errors import InvalidInputError, NotFoundError, QueueFullError, TaskConflictError
from ..core.queue import ANONYMOUS
from ..core.record import TaskRecord
from ..core.status import TaskStatus
from .files import FileStore, new_id
from .joblines import LineError, check_file, error_line, output_line, parse_line
from .jobstate import FINISHED, Job, Run, commit, open_run, save, window_s

logger = logging.getLogger("raytask.manager")

JOB_COMMANDS = (
    "file_open",
    "file_write",
    "file_close",
    "file_abort",
    "file_get",
    "file_list",
    "file_read",
    "file_delete",
    "batch_create",
    "batch_get",
    "batch_cancel",
    "batch_list",
)
"""What the ``/v1`` routes ask of :class:`Jobs` (the manager actor serves them as ``job``)."""
COMMIT_S = 0.5
"""How often a running job commits its progress (a crash re-runs at most this much)."""
_FEED_SLICE = 256  # lines fed between two yields to the event loop


class Jobs:
    """The batch jobs and files of one app, and the commands of ``/v1`` on them.

    Args:
        service: the app's task service (lines run as its tasks).
        root: ``batch_dir``.
        endpoints: the app's endpoints by name (their input models check the lines).
        kick: called when lines were queued (the manager's dispatch loop wakes).
        fetch: the value of a result held elsewhere (the actor: awaits an ``ObjectRef``).
    """

    def __init__(
        self,
        service: Any,
        root: Path,
        endpoints: dict[str, Endpoint],
        kick: Callable[[], None] = lambda: None,
        fetch: Callable[[Any], Awaitable[Any]] | None = None,
    ) -> None:
        self.service = service
        self._kick = kick
        self.endpoints = endpoints
        self.clock = service.table.clock
        self.files = FileStore(root, service.config.max_file_bytes, self.clock)
        self.dir = root / "batches"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fetch = fetch
        self._jobs: dict[str, Job] = {}
        self._runs: dict[str, Run] = {}
        self._lines: dict[str, str] = {}  # a line's task id -> its job's id
        self._drivers: dict[str, asyncio.Task[None]] = {}
        for path in self.dir.glob("batch_*.json"):
            try:
                job = Job(**json.loads(path.read_bytes()))
            except (ValueError, TypeError) as exc:
                logger.error("raytask: unreadable batch job %s: %s", path, exc)
                continue
            self._jobs[job.id] = job
        writing = {
            info["id"]
            for job in self._jobs.values()
            if job.status not in FINISHED
            for info in (job.output, job.error)
            if info is not None
        }
        self.files.clean(writing)
        service.on_job_line = self._finished

    def configure(self, endpoints: dict[str, Endpoint], config: Any) -> None:
        """Take a redeployed app's endpoints and settings."""
        self.endpoints = endpoints
        self.files.max_file_bytes = config.max_file_bytes

    def start(self) -> None:
        """Resume the unfinished jobs (in a running event loop)."""
        for job in self._jobs.values():
            if job.status not in FINISHED:
                self._drive(job)

    async def close(self) -> None:
        for driver in self._drivers.values():
            driver.cancel()
        await asyncio.gather(*self._drivers.values(), return_exceptions=True)

    # -- files -------------------------------------------------------------------

    async def file_open(self, filename: str, purpose: str, owner: str | None = None) -> str:
        return self.files.open(filename, purpose, owner)

    async def file_write(self, upload_id: str, data: bytes) -> None:
        self.files.write(upload_id, data)

    async def file_close(self, upload_id: str) -> dict[str, Any]:
        return self.files.close(upload_id).wire()

    async def file_abort(self, upload_id: str) -> None:
        self.files.abort(upload_id)

    async def file_get(self, file_id: str, owner: str | None = None) -> dict[str, Any]:
        return self.files.get(file_id, owner).wire()

    async def file_list(
        self, owner: str | None = None, purpose: str | None = None
    ) -> list[dict[str, Any]]:
        return [info.wire() for info in self.files.list(owner, purpose)]

    async def file_read(
        self, file_id: str, offset: int, size: int, owner: str | None = None
    ) -> bytes:
        return self.files.read(file_id, offset, size, owner)

    async def file_delete(self, file_id: str, owner: str | None = None) -> dict[str, Any]:
        self.files.get(file_id, owner)
        for job in self._jobs.values():
            if job.input_file_id == file_id and job.status not in FINISHED:
                raise TaskConflictError(f"file {file_id} is the input of {job.id}, still running")
        self.files.delete(file_id, owner)
        return {"id": file_id, "object": "file", "deleted": True}

    # -- batches -----------------------------------------------------------------

    async def batch_create(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
        priority: int = -1,
        owner: str | None = None,
        tenant: str = ANONYMOUS,
    ) -> dict[str, Any]:
        """A new job on an uploaded file; it checks every line before any runs. Its
        lines are ``tenant``'s tasks: its quotas hold the feed back, not the job."""
        name = endpoint.removeprefix("/")
        spec = self.endpoints.get(name)
        if not endpoint.startswith("/") or spec is None or not spec.is_task:
            tasks = sorted(f"/{e.name}" for e in self.endpoints.values() if e.is_task)
            raise InvalidInputError(f"endpoint must be one of {tasks}, not {endpoint[:64]!r}")
        info = self.files.get(input_file_id, owner)
        if info.purpose != "batch":
            raise InvalidInputError(f"file {input_file_id} is not a batch input file")
        self.service.config.check_submit(SubmitOptions(priority=priority))
        now = int(self.clock())
        job = Job(
            new_id("batch_"),
            endpoint,
            input_file_id,
            completion_window,
            now,
            now + window_s(completion_window),
            priority,
            metadata,
            owner,
            tenant,
        )
        self._jobs[job.id] = job
        self._save(job)
        self._drive(job)
        return job.wire()

    def _get(self, batch_id: str, owner: str | None) -> Job:
        job = self._jobs.get(batch_id)
        if job is None or (owner is not None and job.owner != owner):
            raise NotFoundError(f"no batch {batch_id[:64]!r}")
        return job

    async def batch_get(self, batch_id: str, owner: str | None = None) -> dict[str, Any]:
        return self._get(batch_id, owner).wire()

    async def batch_cancel(self, batch_id: str, owner: str | None = None) -> dict[str, Any]:
        """Cancel a job: queued lines are cancelled, running ones end, finished ones stay;
        the lines that never ran go to the error file as ``batch_cancelled``."""
        job = self._get(batch_id, owner)
        if job.status in FINISHED:
            raise TaskConflictError(f"batch {batch_id} is already {job.status}")
        if job.status in ("validating", "in_progress"):
            self._move(job, "cancelling")
            run = self._runs.get(job.id)
            if run is not None:
                self._stop(run, "batch_cancelled")
        return job.wire()

    async def batch_list(
        self, after: str | None = None, limit: int = 20, owner: str | None = None
    ) -> dict[str, Any]:
        """A page of jobs, newest first (``after``: the last id of the page before)."""
        jobs = sorted(
            (j for j in self._jobs.values() if owner is None or j.owner == owner),
            key=lambda j: (j.created_at, j.id),
            reverse=True,
        )
        if after is not None:
            ids = [j.id for j in jobs]
            jobs = jobs[ids.index(after) + 1 :] if after in ids else []
        page = jobs[:limit]
        return {
            "object": "list",
            "data": [j.wire() for j in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(jobs) > limit,
        }

    # -- running -----------------------------------------------------------------

    def _save(self, job: Job) -> None:
        save(job, self.dir)

    def _move(self, job: Job, status: str) -> None:
        job.status = status
        setattr(job, f"{status}_at", int(self.clock()))
        self._save(job)

    def _drive(self, job: Job) -> None:
        driver = asyncio.get_running_loop().create_task(self._run(job))
        self._drivers[job.id] = driver
        driver.add_done_callback(lambda _: self._drivers.pop(job.id, None))

    async def _run(self, job: Job) -> None:
        try:
            if job.status == "validating":
                await self._validate(job)
            if job.status not in FINISHED:
                await self._execute(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a full disk: the job ends, and says why
            logger.exception("raytask batch %s failed", job.id)
            job.errors = [{"code": "internal_error", "message": str(exc)[:500], "line": None}]
            self._move(job, "failed")
        finally:
            run = self._runs.pop(job.id, None)
            if run is not None:
                for task_id in run.inflight:
                    self._lines.pop(task_id, None)

    async def _validate(self, job: Job) -> None:
        spec = self.endpoints.get(job.endpoint[1:])
        path = self.files.path(job.input_file_id)
        if spec is None:
            total, errors = 0, [{"code": "endpoint_gone", "message": job.endpoint, "line": None}]
        else:
            total, errors = await asyncio.to_thread(check_file, path, job.endpoint, spec)
        job.total = total
        if job.status == "cancelling":
            self._move(job, "cancelled")
        elif errors:
            job.errors = errors
            self._move(job, "failed")
        else:
            self._move(job, "in_progress")

    async def _execute(self, job: Job) -> None:
        run = self._runs[job.id] = open_run(job, self.files, self.dir)
        try:
            if job.status == "cancelling":
                self._stop(run, "batch_cancelled")
            committed = time.monotonic()
            while True:
                await self._write_finished(job, run)
                if job.status == "in_progress" and run.stopping is None:
                    if self.clock() >= job.expires_at:
                        self._stop(run, "batch_expired")
                    else:
                        await self._feed(job, run)
                if (run.eof or run.stopping) and not run.inflight and not run.finished:
                    break
                if time.monotonic() - committed >= COMMIT_S:
                    commit(job, run, self.dir)
                    committed = time.monotonic()
                wait = COMMIT_S if run.held is None else self.service.config.retry_after_s
                try:
                    await asyncio.wait_for(run.wake.wait(), wait)
                except TimeoutError:
                    pass
                run.wake.clear()
            await self._end(job, run)
        finally:
            run.src.close()
            run.out.release()
            run.err.release()

    async def _end(self, job: Job, run: Run) -> None:
        if run.stopping is not None:  # the lines that never ran: in the error file
            await asyncio.to_thread(self._write_rest, job, run, run.stopping)
        else:
            self._move(job, "finalizing")
        commit(job, run, self.dir)
        for upload, kind in ((run.out, "output_file_id"), (run.err, "error_file_id")):
            upload.close()
            if upload.info.bytes:
                self.files.publish(upload.info)
                setattr(job, kind, upload.info.id)
            else:
                upload.path.unlink(missing_ok=True)
        job.output = job.error = None
        ending = {"batch_cancelled": "cancelled", "batch_expired": "expired"}
        self._move(job, ending.get(run.stopping or "", "completed"))
        (self.dir / f"{job.id}.progress").unlink(missing_ok=True)

    def _write_rest(self, job: Job, run: Run, code: str) -> None:
        reason = "the batch was cancelled" if code == "batch_cancelled" else "the batch expired"
        rest = [run.held] if run.held is not None else []
        for number, _, raw in [*rest, *(run.feed or ())]:
            if not run.is_done(number):
                try:
                    custom_id = json.loads(raw)["custom_id"]
                except (ValueError, KeyError, TypeError):
                    custom_id = ""
                run.err.write(error_line(new_id("batch_req_"), custom_id, code, reason))

    def _stop(self, run: Run, code: str) -> None:
        """Feed no more lines, and cancel the job's queued ones."""
        run.stopping = code
        for task_id in list(run.inflight):
            record = self.service.table.find(task_id)
            if record is not None and record.status is TaskStatus.PENDING:
                self.service.table.cancel(task_id)
        run.wake.set()

    async def _feed(self, job: Job, run: Run) -> None:
        window = self.service.config.batch_window
        if run.eof or len(run.inflight) >= window:
            return
        name = job.endpoint[1:]
        spec = self.endpoints.get(name)
        route = self.service.routes.get(name)
        if spec is None or route is None or run.feed is None:
            raise RuntimeError(f"the app has no endpoint {job.endpoint} any more")
        if run.options is None or run.options[0] is not route.options:  # made once a deploy
            run.options = (route.options, SubmitOptions(priority=job.priority).apply(route.options))
        options = run.options[1]
        fed = 0
        while len(run.inflight) < window:
            item, run.held = run.held or next(run.feed, None), None
            if item is None:
                run.eof = True
                break
            number, offset, raw = item
            if run.is_done(number):
                continue
            try:
                custom_id, kwargs = parse_line(raw, job.endpoint, spec)
            except LineError as exc:  # the endpoint changed since the check (a redeploy)
                run.err.write(error_line(new_id("batch_req_"), "", exc.code, exc.message))
                job.failed += 1
                run.mark(number)
                continue
            try:
                record = self.service.table.submit(
                    name, kwargs, options, owner=job.owner, job=job.id, tenant=job.tenant
                )
            except QueueFullError:
                run.held = item  # fed again once the queue has room
                break
            run.inflight[record.task_id] = (number, offset, custom_id)
            self._lines[record.task_id] = job.id
            fed += 1
            if fed % _FEED_SLICE == 0:
                self._kick()
                await asyncio.sleep(0)  # interactive calls go on meanwhile
        if fed:
            self._kick()

    def _finished(self, record: TaskRecord) -> None:
        """A line's task finished (the service calls this from its change hook)."""
        run = self._runs.get(self._lines.get(record.task_id, ""))
        if run is not None:
            run.finished.append(record)
            run.wake.set()

    async def _write_finished(self, job: Job, run: Run) -> None:
        while run.finished:
            records, run.finished = run.finished, []
            for record in records:
                number, _, custom_id = run.inflight.pop(record.task_id)
                self._lines.pop(record.task_id, None)
                line, kind = await self._line_of(record, custom_id, run.stopping)
                if kind == "ok":
                    run.out.write(line)
                    job.completed += 1
                else:  # a line cancelled before it ran is not counted (as OpenAI counts)
                    run.err.write(line)
                    job.failed += kind == "failed"
                run.mark(number)
            self.service.table.delete(r.task_id for r in records)

    async def _line_of(
        self, record: TaskRecord, custom_id: str, stopping: str | None
    ) -> tuple[bytes, str]:
        """The output or error line of a finished line task, and its kind: ``ok``,
        ``failed``, or ``unrun`` (cancelled with its job before it ran)."""
        line_id, task_id = new_id("batch_req_"), record.task_id
        if record.status is TaskStatus.SUCCESS and record.result is not None:
            value = record.result.value
            try:
                if isinstance(value, ChunkLog):
                    value = value.values()
                elif not record.result.inline and self._fetch is not None:
                    value = await self._fetch(value)
                return output_line(line_id, custom_id, task_id, value), "ok"
            except Exception as exc:  # lost from the object store, or no JSON form
                line = error_line(line_id, custom_id, "result_unavailable", str(exc), task_id)
                return line, "failed"
        if record.status is TaskStatus.CANCELLED and record.executed_at is None and stopping:
            reason = "the batch was cancelled" if stopping == "batch_cancelled" else "expired"
            return error_line(line_id, custom_id, stopping, reason), "unrun"
        code = "cancelled" if record.status is TaskStatus.CANCELLED else "task_failed"
        return error_line(line_id, custom_id, code, record.error or code, task_id), "failed"
