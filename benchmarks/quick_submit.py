"""A quick submit-rate loop against the demo app on a local Ray (run by hand).

    .venv/bin/python benchmarks/quick_submit.py [--tasks 2000] [--concurrency 32]

It starts its own local Ray + Serve on 127.0.0.1, submits no-op tasks over HTTP from
``--clients`` httpx clients, waits until all are ``success`` (polling the manager's counts),
and prints the HTTP submit rate and the end-to-end task rate. It stops what it started.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
from local_serve import local_serve


async def submit_all(url: str, tasks: int, concurrency: int, clients: int) -> list[float]:
    pools = [httpx.AsyncClient(base_url=url, timeout=60) for _ in range(clients)]
    latencies: list[float] = []
    counter = iter(range(tasks))

    async def worker(index: int) -> None:
        client = pools[index % clients]
        for _ in counter:
            start = time.perf_counter()
            response = await client.post("/noop/submit", json={})
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    for pool in pools:
        await pool.aclose()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    with local_serve() as url:
        import ray
        from ray import serve

        from raytask.core.names import NAMESPACE, manager_name
        from tests.apps import build

        serve.run(build({"max_queue_size": 1_000_000}), name="bench", route_prefix="/")
        manager = ray.get_actor(manager_name("bench"), namespace=NAMESPACE)
        asyncio.run(submit_all(url, 50, 8, 1))  # warm up
        start = time.perf_counter()
        latencies = asyncio.run(submit_all(url, args.tasks, args.concurrency, args.clients))
        submitted = time.perf_counter() - start
        while ray.get(manager.stats.remote())["counts"]["noop"]["success"] < args.tasks + 50:
            time.sleep(0.05)
        done = time.perf_counter() - start
        latencies.sort()
        p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
        print(
            f"{args.tasks} no-op tasks, concurrency {args.concurrency}, {args.clients} clients: "
            f"submit {args.tasks / submitted:.0f}/s (p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms), "
            f"end-to-end {args.tasks / done:.0f} tasks/s"
        )
        stats = ray.get(manager.stats.remote())
        print("manager:", {k: v for k, v in stats.items() if k != "counts"})


if __name__ == "__main__":
    main()
