"""The typed messages between the ingress, the clients and the task manager.

Plain, frozen, picklable data: what travels in a Ray call is one of these (or a list of
them), never a tuple whose meaning depends on its position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import SubmitOptions
from .errors import HTTPError, TaskExpiredError, TaskNotFoundError
from .state import TaskState

NO_OPTIONS = SubmitOptions()  # frozen: every default submit shares it


@dataclass(frozen=True, slots=True)
class Submit:
    """One task to queue.

    Attributes:
        endpoint: the task endpoint's name.
        kwargs: its validated inputs.
        options: per-submit options (the endpoint's defaults fill the rest).
        idempotency_key: a later submit with the same key answers the same task.
        owner: who may see it, with token isolation (a hash of the API token).
    """

    endpoint: str
    kwargs: dict[str, Any]
    options: SubmitOptions = NO_OPTIONS
    idempotency_key: str | None = None
    owner: str | None = None


def seen_by(
    owner: str | None, task_id: str, answer: TaskState | HTTPError
) -> TaskState | HTTPError:
    """A status answer as ``owner`` may see it (token isolation; None: no isolation):
    another tenant's task, live or expired, is 404 as an unknown id (a 410 would tell that
    the id existed)."""
    if owner is None:
        return answer
    theirs = isinstance(answer, TaskState | TaskExpiredError) and answer.owner != owner
    return TaskNotFoundError(f"task {task_id} not found") if theirs else answer
