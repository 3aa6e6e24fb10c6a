"""What each journaled task becomes when a task manager starts again.

Every change here goes through :meth:`~raytask.core.record.TaskRecord.move` by the
state machine's recovery rules (:data:`raytask.core.status.RECOVERY`).

A restarted manager has lost what lived only in its process: the attempts it had sent to
replicas, and every result it owned in Ray's object store (an object dies with its owner,
and Ray 2.60 cannot hand ownership over). The journal kept everything a client was told.
:func:`recover` decides, from that alone, the state each task resumes in; delivery is
at-least-once, so a task whose run or result was lost runs again while it has attempts
left, and a task that kills its replica or the manager on every attempt still ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .config import TaskOptions
from .status import TaskStatus
from .table import TaskRecord

LOST_RUN = "the task manager restarted while this task ran"
LOST_RESULT = "the result was lost when the task manager restarted"


@dataclass
class Recovery:
    """The outcome of :func:`recover`.

    Attributes:
        records: every task, in the state it resumes in.
        changed: the ids whose state differs from the journal's (to journal again).
        requeued, failed: how many went back to the queue and how many ended in failure.
    """

    records: list[TaskRecord] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    requeued: int = 0
    failed: int = 0


def recover(
    records: Iterable[TaskRecord],
    endpoints: Iterable[str],
    has_result: Iterable[str],
    now: float,
    unreadable: Mapping[str, str] | None = None,
) -> Recovery:
    """Decide the state each journaled task resumes in.

    Args:
        records: the journal's records.
        endpoints: the task endpoints the app has now.
        has_result: ids of successes whose result the journal kept.
        now: the current time (finished tasks that fail now expire from here).
        unreadable: why each journal row that could not be read was left out, by task
            id: each of those tasks ends in ``failure`` with that reason (its endpoint
            and inputs are unknown), so its id still answers.

    Rules: ``pending`` stays queued (in submission order); ``in_progress`` is queued
    again as a new attempt, or ends in ``failure`` when its attempts are used up; a
    ``success`` whose result was not journaled runs again (same rule), or ends in
    ``failure`` when its endpoint opted out (``rerun_lost_results=False``); finished
    tasks with their results are unchanged; tasks of an endpoint that no longer exists
    end in ``failure``.
    """
    known, kept = set(endpoints), set(has_result)
    outcome = Recovery()
    for record in records:
        before = (record.status, record.error)
        if not record.status.finished and record.endpoint not in known:
            _fail(record, f"its endpoint {record.endpoint!r} no longer exists", now)
        elif record.status is TaskStatus.IN_PROGRESS:
            _requeue_or_fail(record, LOST_RUN, now)
        elif record.status is TaskStatus.SUCCESS and record.task_id not in kept:
            record.result, record.result_bytes = None, 0  # gone: it holds no room any more
            if record.endpoint in known and record.options.rerun_lost_results:
                _requeue_or_fail(record, LOST_RESULT, now)
            else:
                _fail(record, LOST_RESULT, now)
        if (record.status, record.error) != before:
            outcome.changed.append(record.task_id)
            if record.status is TaskStatus.PENDING:
                outcome.requeued += 1
            else:
                outcome.failed += 1
        outcome.records.append(record)
    for task_id, reason in (unreadable or {}).items():
        # Its state is unknown: it ran, as far as anyone can tell, and failed.
        record = TaskRecord(task_id, "", {}, TaskOptions(), now, TaskStatus.IN_PROGRESS)
        _fail(record, reason, now)
        outcome.records.append(record)
        outcome.changed.append(task_id)
        outcome.failed += 1
    return outcome


def _requeue_or_fail(record: TaskRecord, reason: str, now: float) -> None:
    if record.attempts >= record.options.max_attempts:
        _fail(record, f"{reason} (gave up after {record.attempts} attempts)", now)
        return
    record.move(TaskStatus.PENDING, now, recovering=True)
    record.error = reason


def _fail(record: TaskRecord, reason: str, now: float) -> None:
    record.move(TaskStatus.FAILURE, now, recovering=True)
    record.error = reason
