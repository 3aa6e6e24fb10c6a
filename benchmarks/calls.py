"""Manager calls and manager CPU per HTTP task (issue 28), run by hand.

One local Ray with Serve's proxy runs the tests' demo app (SQLite journal); the load client
(``load.py``) submits ``--tasks`` no-op tasks at concurrency 32 over 8 httpx pools, polls
each task's status every 10 ms until it is final (``load.end_to_end``), then asks ``get``
of each, once plainly and once with ``wait_s``. The manager's own counts (``stats()["calls"]``,
by method) and its process's CPU time are read before and after.

    .venv/bin/python benchmarks/calls.py [--tasks 2000] [--ingress 1] [--tag after]

Writes ``benchmarks/results/<date>-calls-<tag>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import load  # noqa: E402
from local_serve import local_serve  # noqa: E402

APP = "calls"


def deploy(ingress: int) -> Any:
    import ray
    from ray import serve

    import raytask
    from raytask.core.names import NAMESPACE, manager_name
    from tests.apps import Demo

    journal = str(Path(tempfile.mkdtemp(prefix="raytask-calls-")) / "j.db")
    settings = {"journal": journal, "ingress_num_replicas": ingress}
    serve.run(raytask.app(Demo.bind(), config=settings), name=APP, route_prefix=f"/{APP}")
    return ray.get_actor(manager_name(APP), namespace=NAMESPACE)


async def gets(url: str, task_ids: list[str], wait_s: float | None) -> int:
    """``get`` of each task, 32 at a time; how many answered 200."""
    params = {} if wait_s is None else {"wait_s": wait_s}
    async with load.pools(url, 8) as clients:
        todo = iter(enumerate(task_ids))
        ok = 0

        async def worker() -> None:
            nonlocal ok
            for i, task_id in todo:
                client = clients[i % len(clients)]
                answer = await client.get("/noop/get", params={"task_id": task_id, **params})
                ok += answer.status_code == 200

        await asyncio.gather(*(worker() for _ in range(32)))
    return ok


def main() -> None:
    import psutil
    import ray

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--ingress", type=int, default=1, help="ingress replicas")
    parser.add_argument("--tag", default="after")
    args = parser.parse_args()
    with local_serve(num_cpus=4) as base:
        manager = deploy(args.ingress)
        url = f"{base}/{APP}"
        time.sleep(3)  # the ingress replicas start following
        stats = ray.get(manager.stats.remote())
        process = psutil.Process(stats["pid"])
        before, cpu = stats.get("calls", {}), process.cpu_times()
        started = time.perf_counter()
        run = asyncio.run(load.end_to_end(url, "noop", {}, args.tasks, 32, 8))
        listed = ray.get(manager.list_tasks.remote("noop", None, args.tasks, None))
        task_ids = [state.task_id for state in listed[0]]
        got = asyncio.run(gets(url, task_ids, None))
        waited = asyncio.run(gets(url, task_ids, 30.0))
        elapsed = time.perf_counter() - started
        after_cpu = process.cpu_times()
        after = ray.get(manager.stats.remote()).get("calls", {})
    calls = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    calls.pop("stats", None)
    calls.pop("list_tasks", None)
    used = (after_cpu.user - cpu.user) + (after_cpu.system - cpu.system)
    tasks = args.tasks
    result = {
        "date": datetime.date.today().isoformat(),
        "tag": args.tag,
        "tasks": tasks,
        "ingress_replicas": args.ingress,
        "end_to_end_per_s": run["end_to_end_per_s"],
        "gets_ok": got,
        "waited_gets_ok": waited,
        "seconds": elapsed,
        "calls": calls,
        "calls_per_task": sum(calls.values()) / tasks,
        "calls_per_task_without_feed": sum(v for k, v in calls.items() if k != "changes") / tasks,
        "manager_cpu_ms_per_task": 1e3 * used / tasks,
    }
    out = HERE / "results" / f"{result['date']}-calls-{args.tag}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
