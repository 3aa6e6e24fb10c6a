"""A task service's table rebuilt from its journal (a restarted manager, a new ``serve run``).

The journal's rows come back as records, small results go back where results live (the
actor: the object store), :func:`raytask.core.recovery.recover` decides what each task
becomes, and the tasks failed or re-queued by that are journaled again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ray import cloudpickle  # the pickler alone (by value: the app's own classes)

from ..core.record import Result
from ..core.recovery import recover
from ..core.status import TaskStatus
from .journal import Journal

if TYPE_CHECKING:
    from .service import TaskService

logger = logging.getLogger("raytask.manager")


def reload(service: TaskService, journal: Journal, restore: Callable[[Any], Any]) -> None:
    """Rebuild ``service``'s table from ``journal``, before anything else runs."""
    started = time.monotonic()
    table = service.table
    records, results, broken = journal.load()
    table.usage.restore(journal.load_usage())
    kept: dict[str, Any] = {  # a generator task's result: its journaled chunks
        r.task_id: r.chunks for r in records if r.chunks is not None
    }
    for task_id, payload in results.items():
        try:  # small results come back, owned by this process
            kept[task_id] = restore(cloudpickle.loads(payload))
        except Exception as exc:  # e.g. its class is gone: the task runs again
            logger.warning("raytask: cannot restore the result of %s: %s", task_id, exc)
    ended = {r.task_id for r in records if r.status.finished}  # counted in usage already
    outcome = recover(records, service.routes, kept, table.clock(), broken)
    for record in outcome.records:
        if record.status is TaskStatus.SUCCESS and record.task_id in kept:
            record.result = Result(kept[record.task_id], record.result_bytes)
    table.restore(outcome.records)
    service.webhooks.resume(outcome.records)
    changed = [table.get(task_id) for task_id in outcome.changed]
    for record in changed:  # failed at recovery: counted, as any finish, once
        if record.status.finished and record.task_id not in ended:
            table.usage.finished(record)
    journal.rewrite(changed)
    logger.warning(
        "raytask manager of %s: journal %s: %d tasks back (%d requeued, %d failed) in %.2f s",
        service.app_name,
        journal.store,
        len(outcome.records),
        outcome.requeued,
        outcome.failed,
        time.monotonic() - started,
    )
