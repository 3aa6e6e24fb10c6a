"""Tenants (issue 27): fairness, the fair queue's cost, and ``submits_per_s`` (run by hand).

One local Ray runs the tests' demo app three times, each with its own journal:

1. **Starvation**: tenant A submits 10,000 ``sleep(0.2)`` tasks (in-cluster ``submit_many``),
   and once they run tenant B submits one. Reports B's ``queue_position`` at once, its
   ``queue_s``, and how many of A's tasks started between B's submit and B's start (one
   dispatch round is the in-flight limit, ``--in-flight``).
2. **Weights 3:1**: tenants W3 (weight 3) and W1 (weight 1) each queue 1,500 no-op tasks
   while dispatch is held; then dispatch resumes and the first 1,000 starts (by
   ``executed_at``) are split by tenant.
3. **Cost**: in-cluster end to end, ``--tasks`` no-op tasks as 100 ``submit_many`` calls of
   the same size, from one tenant or from 100 tenants (one call each), alternating rounds.
4. **submits_per_s**: over HTTP, tenant R (``submits_per_s: 50``) submits as fast as 8
   connections go for ``--burst-s`` s while tenant O submits 20 a second; reports R's
   accepted rate against its quota and O's refusals (there must be none).

    .venv/bin/python -m benchmarks.tenants [--tasks 3000] [--rounds 3] [--burst-s 30]

Writes ``benchmarks/results/<date>-tenants.json``.
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

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from local_serve import local_serve  # noqa: E402
from sides import alternate, until_succeeded  # noqa: E402

RATE = 50.0
TOKENS = {"R": "rate-limited-tenant-01", "O": "other-tenant-0000000002"}


def deploy(name: str, **settings: Any) -> Any:
    import ray
    from ray import serve

    import raytask
    from raytask.core.names import NAMESPACE, manager_name
    from tests.apps import Demo

    journal = str(Path(tempfile.mkdtemp(prefix=f"raytask-tenants-{name}-")) / "j.db")
    config = {"max_queue_size": 1_000_000, "max_tasks": 2_000_000, "journal": journal, **settings}
    demo = Demo.options(max_ongoing_requests=64)
    serve.run(raytask.app(demo.bind(), config=config), name=name, route_prefix=f"/{name}")
    return ray.get_actor(manager_name(name), namespace=NAMESPACE)


def starvation(in_flight: int) -> dict[str, Any]:
    import ray

    import raytask

    manager = deploy("starve", max_in_flight=in_flight)
    a = raytask.get_client("starve", tenant="A").sleep.submit_many([{"seconds": 0.2}] * 10_000)
    a[0].get(timeout=60)
    b_client = raytask.get_client("starve", tenant="B")
    b = b_client.sleep.submit(seconds=0.01)
    position = b.get_state().queue_position
    b.get(timeout=60)
    state = b.get_state()
    states = ray.get(manager.status_many.remote([t.id for t in a[:2000]]))
    started_between = sum(
        1
        for s in states
        if s.executed_at is not None and state.created_at < s.executed_at < state.executed_at
    )
    ray.get(manager.cancel_many.remote(None, None, ["pending", "in_progress"]))
    result = {
        "a_backlog": 10_000,
        "in_flight_limit": in_flight,
        "b_queue_position_at_submit": position,
        "b_queue_s": state.queue_s,
        "a_tasks_started_before_b": started_between,
    }
    print("starvation", json.dumps(result), flush=True)
    return result


def weights() -> dict[str, Any]:
    import ray

    import raytask
    from raytask.core.status import TaskStatus

    manager = deploy(
        "weights",
        max_in_flight=8,
        tenants={"W3": {"weight": 3}, "W1": {"weight": 1}},
    )
    # Hold dispatch: the in-flight slots are taken by H's long tasks first.
    hold = raytask.get_client("weights", tenant="hold")
    holders = hold.sleep.submit_many([{"seconds": 3.0}] * 8)
    time.sleep(0.5)
    w3 = raytask.get_client("weights", tenant="W3").noop.submit_many([{}] * 1500)
    w1 = raytask.get_client("weights", tenant="W1").noop.submit_many([{}] * 1500)
    for task in holders:
        task.get(timeout=60)
    w1[-1].get(timeout=120)
    w3[-1].get(timeout=120)
    ids = [t.id for t in w3] + [t.id for t in w1]
    states = ray.get(manager.status_many.remote(ids))
    tenant_of = {t.id: "W3" for t in w3} | {t.id: "W1" for t in w1}
    order = sorted(
        (s for s in states if s.status is TaskStatus.SUCCESS), key=lambda s: s.executed_at
    )
    first = [tenant_of[s.task_id] for s in order[:1000]]
    split = {name: first.count(name) for name in ("W3", "W1")}
    result = {"starts": len(first), "split": split, "w3_share": split["W3"] / len(first)}
    print("weights", json.dumps(result), flush=True)
    return result


def cost(tasks: int, rounds: int) -> dict[str, Any]:
    import raytask

    deploy("cost")
    per_call = tasks // 100
    one = raytask.get_client("cost", tenant="solo")
    many = [raytask.get_client("cost", tenant=f"t{i}") for i in range(100)]

    def submit(clients: list[Any]) -> list[Any]:
        handles: list[Any] = []
        for client in clients:
            handles += client.noop.submit_many([{}] * per_call)
        return handles

    runs = {
        "one_tenant": lambda: until_succeeded("cost", "noop", lambda: submit([one] * 100), tasks),
        "100_tenants": lambda: until_succeeded("cost", "noop", lambda: submit(many), tasks),
    }
    for run in runs.values():
        run()  # warm
    rates = alternate(runs, rounds)
    median = {kind: statistics.median(values) for kind, values in rates.items()}
    result = {
        "tasks": tasks,
        "tasks_per_s": rates,
        "median_tasks_per_s": median,
        "ratio_100_tenants_vs_one": median["100_tenants"] / median["one_tenant"],
    }
    print("cost", json.dumps(result), flush=True)
    return result


def rate_limit(base_url: str, burst_s: float) -> dict[str, Any]:
    import httpx

    deploy("rate", api_tokens=TOKENS, tenants={"R": {"submits_per_s": RATE}}, max_in_flight=64)
    url = f"{base_url}/rate/noop/submit"
    counts: dict[str, int] = {}
    latency: dict[str, list[float]] = {"O_alone": [], "O_beside_R": []}

    async def hammer(tenant: str, pause_s: float, until: float, phase: str) -> None:
        headers = {"Authorization": f"Bearer {TOKENS[tenant]}"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            while time.monotonic() < until:
                sent = time.perf_counter()
                response = await http.post(url, json={})
                ok = response.status_code == 200
                assert ok or response.status_code == 429, response.text
                key = f"{tenant}_{'accepted' if ok else 'refused'}"
                counts[key] = counts.get(key, 0) + 1
                if tenant == "O":
                    latency[phase].append(time.perf_counter() - sent)
                if pause_s:
                    await asyncio.sleep(pause_s)

    asyncio.run(hammer("O", 1 / 20, time.monotonic() + 5, "O_alone"))  # O's own pace first
    counts.clear()

    async def burst(until: float) -> None:
        await asyncio.gather(
            *(hammer("R", 0, until, "") for _ in range(8)),
            hammer("O", 1 / 20, until, "O_beside_R"),
        )

    started = time.monotonic()
    asyncio.run(burst(started + burst_s))
    elapsed = time.monotonic() - started
    accepted_per_s = counts.get("R_accepted", 0) / elapsed
    result = {
        "burst_s": round(elapsed, 2),
        "submits_per_s": RATE,
        **counts,
        "R_accepted_per_s": accepted_per_s,
        "R_vs_quota": accepted_per_s / RATE,
        "R_vs_quota_without_the_first_burst": (counts.get("R_accepted", 0) - 2 * RATE)
        / elapsed
        / RATE,
        "O_p50_ms": {k: 1e3 * statistics.median(v) for k, v in latency.items() if v},
    }
    print("rate", json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst-s", type=float, default=30.0)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--only", help="one part: starvation, weights, cost or rate_limit")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    parts = {
        "starvation": lambda url: starvation(args.in_flight),
        "weights": lambda url: weights(),
        "cost": lambda url: cost(args.tasks, args.rounds),
        "rate_limit": lambda url: rate_limit(url, args.burst_s),
    }
    chosen = [args.only] if args.only else list(parts)
    with local_serve(num_cpus=4) as base_url:
        result = {"date": datetime.date.today().isoformat()}
        result |= {name: parts[name](base_url) for name in chosen}
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.only}" if args.only else ""
    path = args.out / f"{result['date']}-tenants{suffix}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(path)


if __name__ == "__main__":
    main()
