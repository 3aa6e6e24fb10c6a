"""Reading a task's stream (SPEC 10): what a reader has not seen yet, as a long-poll.

A reader (the ``GET /NAME/stream`` route, a client) knows the attempt whose chunks it read
and how many. :meth:`StreamReads.read` answers at once when there is something new (chunks
past that count, a new attempt, the task's end), else when the task next changes, else after
``wait_s``: nothing polls. Also here: the manager's log lines for failed attempts.
"""

from __future__ import annotations

import asyncio
import logging

from ..core.messages import StreamRead, news_for, stream_read
from ..core.record import TaskRecord
from ..core.status import TaskStatus
from ..core.table import TaskTable

logger = logging.getLogger("raytask.manager")

OUTPUT_EVENT_S = 0.5
"""A task's ``output`` webhook goes at most this often (2 a second)."""


class StreamReads:
    """The stream readers of one task table, and the events that wake them."""

    def __init__(self, table: TaskTable) -> None:
        self.table = table
        self._waits: dict[str, asyncio.Event] = {}
        self._outputs: dict[str, tuple[int, float]] = {}  # id -> (chunks, when) last told

    def output_due(self, record: TaskRecord) -> str | None:
        """``"output"`` when a running task has new chunks and its last ``output`` webhook
        went ``OUTPUT_EVENT_S`` ago or more (None otherwise)."""
        if record.status is not TaskStatus.IN_PROGRESS:
            self._outputs.pop(record.task_id, None)
            return None
        count, now = len(record.chunks or ()), self.table.clock()
        told, at = self._outputs.get(record.task_id, (0, -OUTPUT_EVENT_S))
        if count <= told or now - at < OUTPUT_EVENT_S or record.options.webhook_url is None:
            return None
        self._outputs[record.task_id] = (count, now)
        return "output"

    def changed(self, task_id: str) -> None:
        """A task changed: wake the readers waiting on it."""
        event = self._waits.pop(task_id, None)
        if event is not None:
            event.set()

    def _answer(self, record: TaskRecord, start: int, attempt: int | None) -> StreamRead:
        return stream_read(self.table.answer(record), record.chunks, start, attempt)

    async def read(
        self, task_id: str, start: int, attempt: int | None, wait_s: float
    ) -> StreamRead:
        """The chunks of ``task_id`` from ``start`` (of ``attempt``; None: whichever runs),
        once there is something new or ``wait_s`` passed."""
        read = self._answer(self.table.get(task_id), start, attempt)
        if not news_for(read, attempt):
            event = self._waits.setdefault(task_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), wait_s)
            except TimeoutError:
                pass
            read = self._answer(self.table.get(task_id), start, attempt)
        return read


def log_failure(app_name: str, record: TaskRecord) -> None:
    """Log a failed attempt: "for good" when it is final, "will retry" only when the task
    was re-queued (only then is there a retry)."""
    if record.status is TaskStatus.FAILURE:
        logger.warning(
            "raytask task %s of %s/%s failed for good after %d of at most %d attempts: %s",
            record.task_id,
            app_name,
            record.endpoint,
            record.attempts,
            record.options.max_attempts,
            record.error,
        )
    elif record.status is TaskStatus.PENDING and record.attempts and record.error:
        logger.warning(
            "raytask task %s of %s/%s: attempt %d of %d failed, will retry: %s",
            record.task_id,
            app_name,
            record.endpoint,
            record.attempts,
            record.options.max_attempts,
            record.error,
        )
