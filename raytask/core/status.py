"""Task states, the table of legal transitions, and the wire spellings."""

from __future__ import annotations

import enum


class TaskStatus(enum.StrEnum):
    """The state of a task, with the seed page's wire values.

    ``pending`` (queued) → ``in_progress`` (running) → ``success`` | ``failure``;
    ``cancelled`` from either of the first two. A running task whose replica died goes
    back to ``pending`` while it has attempts left.
    """

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the terminal states, which keep their result until the TTL."""
        return self in _TERMINAL


_TERMINAL = frozenset({TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.CANCELLED})

TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset(
        {TaskStatus.IN_PROGRESS, TaskStatus.CANCELLED, TaskStatus.FAILURE}
    ),
    TaskStatus.IN_PROGRESS: frozenset(
        {TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.CANCELLED, TaskStatus.PENDING}
    ),
    TaskStatus.SUCCESS: frozenset(),
    TaskStatus.FAILURE: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}

# BentoML 1.4's HTTP clients only parse these spellings.
BENTOML_SPELLING: dict[TaskStatus, str] = {
    TaskStatus.PENDING: "pending",
    TaskStatus.IN_PROGRESS: "in_progress",
    TaskStatus.SUCCESS: "completed",
    TaskStatus.FAILURE: "failed",
    TaskStatus.CANCELLED: "canceled",
}


RECOVERY: dict[TaskStatus, frozenset[TaskStatus]] = {
    # The endpoint is gone.
    TaskStatus.PENDING: frozenset({TaskStatus.FAILURE}),
    # The run was lost with the manager: run again, or fail when attempts are used up.
    TaskStatus.IN_PROGRESS: frozenset({TaskStatus.PENDING, TaskStatus.FAILURE}),
    # The result was lost with the manager (only a success may leave a finished state).
    TaskStatus.SUCCESS: frozenset({TaskStatus.PENDING, TaskStatus.FAILURE}),
    TaskStatus.FAILURE: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}
"""What a restarted manager may do to a journaled task (see :mod:`raytask.core.recovery`),
beside :data:`TRANSITIONS`, which is what a running one may do."""


def can_transition(current: TaskStatus, target: TaskStatus, recovering: bool = False) -> bool:
    """Whether the state machine allows ``current`` → ``target`` (``recovering``: by the
    rules of :data:`RECOVERY`)."""
    return target in (RECOVERY if recovering else TRANSITIONS)[current]
