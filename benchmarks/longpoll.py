"""Long-poll vs polling (issue 13, part 3): how soon a waiting client has a finished task's
result, and how many requests the wait costs.

One local Ray serves the demo app. For each of ``--tasks`` tasks (``sleep`` of ``--task-s``
seconds, one at a time), in alternating order:

- **long-poll**: ``GET /sleep/get?wait_s=30`` right after the submit;
- **polling**: ``GET /sleep/status`` with the clients' old backoff (50 ms, growing by half up
  to 1 s) until finished, then ``GET /sleep/get``.

Latency is the time from the task's ``completed_at`` (the manager's clock: the same machine)
to the result in the client's hands.

    .venv/bin/python -m benchmarks.longpoll [--tasks 40] [--task-s 0.5]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from control import deploy  # noqa: E402
from local_serve import local_serve  # noqa: E402


def completed_at(http: httpx.Client, task_id: str) -> float:
    state = http.get("/sleep/status", params={"task_id": task_id}).json()
    return datetime.datetime.fromisoformat(state["completed_at"]).timestamp()


def long_poll(http: httpx.Client, task_s: float) -> tuple[float, int]:
    task_id = http.post("/sleep/submit", json={"seconds": task_s}).json()["task_id"]
    response = http.get("/sleep/get", params={"task_id": task_id, "wait_s": 30})
    received = time.time()
    assert response.status_code == 200, response.text
    return received - completed_at(http, task_id), 2


def polling(http: httpx.Client, task_s: float) -> tuple[float, int]:
    task_id = http.post("/sleep/submit", json={"seconds": task_s}).json()["task_id"]
    requests, delay = 1, 0.05
    while True:
        requests += 1
        state = http.get("/sleep/status", params={"task_id": task_id}).json()
        if state["status"] == "success":
            break
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    response = http.get("/sleep/get", params={"task_id": task_id})
    received = time.time()
    assert response.status_code == 200, response.text
    return received - completed_at(http, task_id), requests + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--task-s", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    numbers: dict[str, dict[str, list[float]]] = {
        "long_poll": {"latency_ms": [], "requests": []},
        "polling": {"latency_ms": [], "requests": []},
    }
    with local_serve(num_cpus=4) as base, httpx.Client(base_url=f"{base}/lp", timeout=60) as http:
        deploy("lp")
        long_poll(http, 0.05)  # warm
        for i in range(args.tasks):
            for name, way in (("long_poll", long_poll), ("polling", polling))[
                :: 1 if i % 2 else -1
            ]:
                latency, requests = way(http, args.task_s)
                numbers[name]["latency_ms"].append(latency * 1e3)
                numbers[name]["requests"].append(requests)
    summary = {
        name: {
            "latency_p50_ms": statistics.median(n["latency_ms"]),
            "latency_p95_ms": statistics.quantiles(n["latency_ms"], n=20)[-1],
            "requests_per_task": statistics.mean(n["requests"]),
        }
        for name, n in numbers.items()
    }
    result = {
        "date": datetime.date.today().isoformat(),
        "tasks": args.tasks,
        "task_s": args.task_s,
        "summary": summary,
        "raw": numbers,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{result['date']}-longpoll.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
