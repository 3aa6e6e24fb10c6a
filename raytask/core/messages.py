"""The typed messages between the ingress, the clients and the task manager.

Plain, frozen, picklable data: what travels in a Ray call is one of these (or a list of
them), never a tuple whose meaning depends on its position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

from .config import SubmitOptions
from .errors import HTTPError, TaskExpiredError, TaskNotFoundError
from .queue import ANONYMOUS
from .record import TaskRecord
from .state import TaskState
from .status import TaskStatus

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
        tenant: the tenant it belongs to (the name of the API token).
    """

    endpoint: str
    kwargs: dict[str, Any]
    options: SubmitOptions = NO_OPTIONS
    idempotency_key: str | None = None
    owner: str | None = None
    tenant: str = ANONYMOUS


A = TypeVar("A", TaskState, TaskRecord, HTTPError)


def seen_by(
    owner: str | None, task_id: str, answer: A, endpoint: str | None = None
) -> A | HTTPError:
    """A status answer, or a task's record, as ``owner`` may see it under ``endpoint``'s
    routes (None: no token isolation, or an app-wide route): another tenant's task, live or
    expired, is 404 as an unknown id (a 410 would tell that the id existed); a task of
    another endpoint is 404 too, naming the endpoint it belongs to (the caller may see it)."""
    owned = isinstance(answer, TaskState | TaskRecord | TaskExpiredError)
    if owner is not None and owned and answer.owner != owner:
        return TaskNotFoundError(f"task {task_id} not found")
    if endpoint is not None and not isinstance(answer, HTTPError) and answer.endpoint != endpoint:
        return elsewhere(task_id, endpoint, answer.endpoint)
    return answer


def elsewhere(task_id: str, endpoint: str, actual: str) -> TaskNotFoundError:
    """The 404 of a task id asked for under an endpoint it does not belong to."""
    return TaskNotFoundError(
        f"task {task_id} is not a task of {endpoint!r}: it belongs to {actual!r} (ask /{actual})"
    )


class StreamRead(NamedTuple):
    """One answer to a stream reader.

    ``attempt``: the attempt whose chunks these are (0: none streamed yet); ``start``: the
    index of the first of ``chunks``, each one's JSON (0 when the attempt is not the
    reader's: it resets);
    ``state``: the task's status answer (its end, once ``state.status`` is finished and
    no chunk is left).
    """

    state: TaskState
    attempt: int
    start: int
    chunks: list[bytes]
    more: bool


MAX_CHUNKS_PER_READ = 1000
"""Chunks in one answer to a stream reader; one that is further behind reads again at once."""


class Chunked(Protocol):
    """An attempt's chunks as a stream reader reads them: the manager's
    :class:`~raytask.core.chunks.ChunkLog`, or the part of it an ingress copy holds."""

    attempt: int

    def __len__(self) -> int:
        """How many chunks the attempt has streamed."""
        ...

    def slice(self, start: int, end: int) -> list[bytes]:
        """The JSON of chunks ``start`` to ``end`` (excluded)."""
        ...


def stream_read(
    state: TaskState, log: Chunked | None, start: int, attempt: int | None
) -> StreamRead:
    """The answer to a reader of chunks ``start`` on of ``attempt`` (None: whichever runs),
    given the task's current ``log`` (None: it streamed none). A new attempt's chunks
    start from the first."""
    current, count = (0, 0) if log is None else (log.attempt, len(log))
    if attempt is not None and attempt != current and current:
        start = 0  # a new attempt: its chunks from the first
    start = min(start, count)
    end = min(count, start + MAX_CHUNKS_PER_READ)
    chunks = [] if log is None else log.slice(start, end)
    return StreamRead(state, current, start, chunks, end < count)


def news_for(read: StreamRead, attempt: int | None) -> bool:
    """Whether ``read`` (from :func:`stream_read`) tells the reader of ``attempt``
    anything new: chunks past where it was, another attempt, the task's end, or (to a
    reader of whichever attempt runs) that the task runs."""
    status = read.state.status
    return (
        status.finished
        or bool(read.chunks)
        or (attempt is not None and read.attempt not in (0, attempt))
        or (attempt is None and status is TaskStatus.IN_PROGRESS)
    )
