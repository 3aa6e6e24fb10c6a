"""Journal bytes and CPU per task: the task table and journal a manager runs, without Ray.

Each task lives the life of a no-op task on a busy manager: submitted, started, succeeded
with a small result, in groups of ``--group`` tasks per journal write (group commit, as
under load). It counts the bytes of every row the store is given (record, result and
inputs) and the process's CPU time, per task.

Side by side with an older checkout (the same venv, its code first on the path)::

    git worktree add /tmp/raytask-before 6accc0f
    .venv/bin/python benchmarks/journal.py --compare /tmp/raytask-before --rounds 3

``--compare`` runs this script under both trees, alternating, and prints the medians and
their ratios (after / before).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def run(tasks: int, group: int, input_bytes: int) -> dict[str, float]:
    from raytask.core.config import TaskOptions
    from raytask.core.status import TaskStatus
    from raytask.core.table import TaskTable
    from raytask.server.journal import Journal, SQLiteStore

    try:  # this version journals a success with its result in one change
        from raytask.core.record import Result
    except ImportError:
        Result = None  # an older version: the result is told apart

    folder = Path(tempfile.mkdtemp(prefix="raytask-bench-journal-"))
    store = SQLiteStore(folder / "j.db")
    written = {"bytes": 0}
    commit = store.commit

    def counting(puts: list[Any], deletes: list[str]) -> None:
        written["bytes"] += sum(len(b) for row in puts for b in row[2:] if b is not None)
        commit(puts, deletes)

    store.commit = counting  # type: ignore[method-assign]
    journal = Journal(store, key=b"k" * 32)
    table = TaskTable(max_queue_size=tasks + 1, max_tasks=tasks + 1)
    payload = b"\x80\x05K\x03."  # the pickle of a small result
    if Result is not None:
        table.on_change = lambda r: journal.changed(
            r, payload if r.status is TaskStatus.SUCCESS else None
        )
    else:
        table.on_change = journal.changed
    options = TaskOptions()
    text = "w " * (input_bytes // 2)

    async def life() -> None:
        for _ in range(0, tasks, group):
            records = [table.submit("e", {"text": text}, options) for _ in range(group)]
            await journal.flush()
            for _ in records:
                table.pop_next("e")
            await journal.flush()
            for record in records:
                if Result is not None:
                    table.succeed(record.task_id, Result(3, 9))
                else:
                    table.succeed(record.task_id)
                    journal.result(record.task_id, payload)
            await journal.flush()

    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(life())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    store.close()
    return {
        "journal_bytes_per_task": written["bytes"] / tasks,
        "cpu_us_per_task": cpu / tasks * 1e6,
        "wall_us_per_task": wall / tasks * 1e6,
        "commits": journal.commits,
    }


def compare(before: str, rounds: int, args: list[str]) -> None:
    here = str(Path(__file__).resolve().parents[1])
    results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for _ in range(rounds):
        for side, tree in (("before", before), ("after", here)):
            env = {**os.environ, "PYTHONPATH": tree}
            out = subprocess.run(
                [sys.executable, __file__, *args],
                env=env,
                cwd=tree,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[side].append(json.loads(out))
    for key in ("journal_bytes_per_task", "cpu_us_per_task", "wall_us_per_task"):
        b = statistics.median(r[key] for r in results["before"])
        a = statistics.median(r[key] for r in results["after"])
        print(f"{key:24s} before {b:10.1f}  after {a:10.1f}  after/before {a / b:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--group", type=int, default=100)
    parser.add_argument("--input-bytes", type=int, default=1000)
    parser.add_argument("--compare", metavar="TREE", help="an older checkout to run beside")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.compare:
        passed = ["--tasks", str(args.tasks), "--group", str(args.group)]
        compare(args.compare, args.rounds, [*passed, "--input-bytes", str(args.input_bytes)])
    else:
        print(json.dumps(run(args.tasks, args.group, args.input_bytes)))


if __name__ == "__main__":
    main()
