"""The task manager's own ceiling (issue 28): calls one manager absorbs, no HTTP (run by hand).

Every raytask app has one task manager actor, and every ingress replica's reads and writes
end there, so its calls per second are the app's ceiling on any cluster. One local Ray runs
the tests' demo app (SQLite journal); the driver calls the manager actor directly, as an
ingress replica does, ``--callers`` calls at a time for ``--seconds``:

- ``status``: reads of finished tasks (what a polling client costs);
- ``status_wait0``: the same through ``wait`` with 0 s (the long-poll path, answered at once);
- ``submit``: single-task submits of the no-op endpoint (journaled before each answer; the
  tasks also run, so dispatch shares the manager's loop as in production).

For each it reports calls/s and the manager process's CPU seconds per call (psutil), whose
inverse is what one core of a bigger head node could take: the manager is one event loop.

    .venv/bin/python benchmarks/manager_ceiling.py [--callers 1,8,32] [--seconds 5]

Writes ``benchmarks/results/<date>-manager-ceiling.json``.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from local_serve import local_serve  # noqa: E402

APP = "ceiling"


def deploy() -> Any:
    import ray
    from ray import serve

    import raytask
    from raytask.core.names import NAMESPACE, manager_name
    from tests.apps import Demo

    journal = str(Path(tempfile.mkdtemp(prefix="raytask-ceiling-")) / "j.db")
    settings = {"max_queue_size": 1_000_000, "max_tasks": 2_000_000, "journal": journal}
    serve.run(raytask.app(Demo.bind(), config=settings), name=APP, route_prefix=f"/{APP}")
    return ray.get_actor(manager_name(APP), namespace=NAMESPACE)


async def measure(
    manager: Any, call: Callable[[int], Any], callers: int, seconds: float
) -> dict[str, float]:
    """``call(i)`` (an actor call) ``callers`` at a time for ``seconds``: calls/s and the
    manager's CPU seconds per call."""
    import psutil

    process = psutil.Process((await manager.stats.remote())["pid"])
    done = 0
    stop = time.perf_counter() + seconds

    async def caller(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < stop:
            await call(i)
            done += 1
            i += callers

    cpu = process.cpu_times()
    started = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(callers)))
    elapsed = time.perf_counter() - started
    after = process.cpu_times()
    used = (after.user - cpu.user) + (after.system - cpu.system)
    return {
        "calls_per_s": done / elapsed,
        "manager_cpu_ms_per_call": 1e3 * used / max(done, 1),
        "manager_cpu_share": used / elapsed,
    }


async def run(manager: Any, callers: list[int], seconds: float) -> dict[str, Any]:
    from raytask.core.config import SubmitOptions
    from raytask.core.messages import Submit

    states = await manager.submit_many.remote("noop", [{}] * 1000, SubmitOptions())
    ids = [state.task_id for state in states]
    while (await manager.queue.remote())["endpoints"]["noop"]["success"] < len(ids):
        await asyncio.sleep(0.2)
    calls = {
        "status": lambda i: manager.status.remote(ids[i % len(ids)]),
        "status_wait0": lambda i: manager.wait.remote(ids[i % len(ids)], 0.0),
        "submit": lambda i: manager.submit.remote(Submit("noop", {}, SubmitOptions())),
    }
    results: dict[str, Any] = {}
    for name, call in calls.items():
        for n in callers:
            await measure(manager, call, n, 1.0)  # warm
            results[f"{name}_{n}_callers"] = got = await measure(manager, call, n, seconds)
            print(name, n, json.dumps({k: round(v, 3) for k, v in got.items()}), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callers", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    callers = [int(n) for n in args.callers.split(",")]
    with local_serve(num_cpus=4):
        manager = deploy()
        results = asyncio.run(run(manager, callers, args.seconds))
    date = datetime.date.today().isoformat()
    out = HERE / "results" / f"{date}-manager-ceiling.json"
    out.write_text(json.dumps({"date": date, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
