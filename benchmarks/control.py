"""Task control's costs (issue 14): batch submits over HTTP, and a deep queue's overhead.

1. **submit_many over HTTP**: one local Ray serves the demo app; 1,000-task
   ``POST /noop/submit_many`` requests against the same tasks sent as 1,000 single submits
   (64 at a time), side by side in alternating rounds: tasks queued per second.
2. **A deep queue**: HTTP submit and status latency (median of ``--probes``) with an empty
   queue and with ``--queued`` tasks pending behind a task that holds the only slot. The
   priority queue and queue positions are O(log n), so the two should be about equal.
3. **The pure table** (no Ray): ``submit`` and ``state`` (with ``queue_position``) per call
   at 0, 10,000 and 100,000 pending, mixed priorities.

    .venv/bin/python -m benchmarks.control [--rounds 3] [--queued 10000]

Writes ``benchmarks/results/<date>-control.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from local_serve import local_serve  # noqa: E402


def deploy(name: str, **config: Any) -> None:
    from ray import serve

    import raytask
    from tests.apps import Demo

    journal = str(Path(tempfile.mkdtemp(prefix=f"raytask-control-{name}-")) / "j.db")
    settings = {"max_queue_size": 1_000_000, "journal": journal, **config}
    demo = Demo.options(max_ongoing_requests=256)
    serve.run(raytask.app(demo.bind(), config=settings), name=name, route_prefix=f"/{name}")


async def batch_rate(url: str, tasks: int) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        start = time.perf_counter()
        for _ in range(tasks // 1000):
            response = await http.post("/noop/submit_many", json=[{}] * 1000)
            assert response.status_code == 200, response.text
        return tasks / (time.perf_counter() - start)


async def single_rate(url: str, tasks: int, concurrency: int = 64) -> float:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                response = await http.post("/noop/submit", json={})
                assert response.status_code == 200, response.text

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(tasks)))
        return tasks / (time.perf_counter() - start)


def latencies(http: httpx.Client, probes: int) -> dict[str, float]:
    submit, status = [], []
    for _ in range(probes):
        start = time.perf_counter()
        response = http.post("/wordcount/submit", json={"text": "x"}, params={"priority": 5})
        submit.append(time.perf_counter() - start)
        task_id = response.json()["task_id"]
        start = time.perf_counter()
        answer = http.get("/wordcount/status", params={"task_id": task_id}).json()
        status.append(time.perf_counter() - start)
        assert answer["queue_position"] is not None
    return {
        "submit_p50_ms": statistics.median(submit) * 1e3,
        "status_p50_ms": statistics.median(status) * 1e3,
    }


def deep_queue(base: str, queued: int, probes: int) -> dict[str, dict[str, float]]:
    http = httpx.Client(base_url=f"{base}/deep", timeout=120)
    gate = http.post("/block/submit", json={"seconds": 600}).json()["task_id"]
    time.sleep(1)
    empty = latencies(http, probes)
    http.post("/wordcount/cancel_many", json={"status": "pending"})
    for _ in range(queued // 1000):
        inputs = [{"text": "x"}] * 1000
        response = http.post("/wordcount/submit_many", json=inputs, params={"priority": -1})
        assert response.status_code == 200, response.text
    deep = latencies(http, probes)
    http.post("/wordcount/cancel_many", json={"status": "pending"})
    http.post("/block/cancel", params={"task_id": gate})
    return {"empty": empty, f"{queued}_queued": deep}


def pure_table() -> dict[str, dict[str, float]]:
    from raytask.core.config import TaskOptions
    from raytask.core.table import TaskTable

    numbers: dict[str, dict[str, float]] = {}
    options = [TaskOptions(priority=p) for p in (-5, 0, 0, 3, 8)]
    for depth in (0, 10_000, 100_000):
        table = TaskTable(max_queue_size=10_000_000)
        ids = [table.submit("e", {}, options[i % 5]).task_id for i in range(depth)]
        probe = 2000
        start = time.perf_counter()
        new = [table.submit("e", {}, options[i % 5]).task_id for i in range(probe)]
        submit_us = (time.perf_counter() - start) / probe * 1e6
        sample = (ids + new)[:: max(1, (depth + probe) // probe)][:probe]
        start = time.perf_counter()
        for task_id in sample:
            table.state(task_id)
        state_us = (time.perf_counter() - start) / len(sample) * 1e6
        numbers[str(depth)] = {"submit_us": submit_us, "state_us": state_us}
    return numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per rate run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    table = pure_table()
    print("table", table, flush=True)
    rounds: dict[str, list[float]] = {"submit_many": [], "single_submits": []}
    with local_serve(num_cpus=4) as base:
        deploy("rate", max_in_flight=1)  # one no-op at a time: the queue holds the rest
        deploy("deep", max_in_flight=1)
        url = f"{base}/rate"
        asyncio.run(batch_rate(url, 1000))  # warm
        asyncio.run(single_rate(url, 200))
        for round_ in range(args.rounds):
            order = ("submit_many", "single_submits")
            for kind in order if round_ % 2 == 0 else order[::-1]:
                httpx.post(f"{url}/noop/cancel_many", json={"status": "pending"}, timeout=60)
                rate = asyncio.run(
                    batch_rate(url, args.tasks)
                    if kind == "submit_many"
                    else single_rate(url, args.tasks)
                )
                rounds[kind].append(rate)
                print(kind, round(rate), flush=True)
        deep = deep_queue(base, args.queued, args.probes)
        print("deep", deep, flush=True)
    median = {kind: statistics.median(rates) for kind, rates in rounds.items()}
    result = {
        "date": datetime.date.today().isoformat(),
        "tasks_per_run": args.tasks,
        "queued_per_s": rounds,
        "median_queued_per_s": median,
        "ratio_submit_many_vs_single": median["submit_many"] / median["single_submits"],
        "deep_queue_http": deep,
        "pure_table": table,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{result['date']}-control"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
