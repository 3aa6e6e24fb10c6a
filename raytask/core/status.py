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


def can_transition(current: TaskStatus, target: TaskStatus) -> bool:
    """Whether the state machine allows ``current`` → ``target``."""
    return target in TRANSITIONS[current]
