"""The task table's core path in process, no Ray (run by hand): what the manager's own
Python costs per task, apart from Ray calls and the journal.

Submits ``--tasks`` no-op tasks with one ``submit_many``, starts them all through the
dispatcher, ends each in success, and reads each one's status answer; prints tasks/s (the
median of ``--rounds``). Run it on two checkouts to compare them (``PYTHONPATH=<other
checkout>`` puts that one's ``raytask`` first).

    .venv/bin/python benchmarks/table_core.py [--tasks 30000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from raytask.core.config import TaskOptions
from raytask.core.dispatcher import Dispatcher, EndpointRoute
from raytask.core.record import Result
from raytask.core.table import TaskTable


def one_round(tasks: int) -> float:
    options = TaskOptions()
    table = TaskTable(max_queue_size=10**8, max_tasks=10**8)
    dispatcher = Dispatcher(table)
    dispatcher.configure([EndpointRoute("noop", "noop", "M", options, 10**9)], None)
    start = time.perf_counter()
    table.submit_many("noop", [{}] * tasks, options)
    for attempt, _, _ in dispatcher.take():
        dispatcher.succeed(attempt, Result(None, 0))
    for task_id in list(table._records):
        table.state(task_id)
    return tasks / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    one_round(2_000)  # warm
    rates = [one_round(args.tasks) for _ in range(args.rounds)]
    print(f"{statistics.median(rates):,.0f} tasks/s (median of {args.rounds})")


if __name__ == "__main__":
    main()
