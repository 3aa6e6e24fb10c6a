"""The in-cluster client's submit rate, from a Ray driver joined to the benchmark's cluster.

    python benchmarks/servers/in_cluster.py GCS_ADDRESS APP N

Prints one JSON object: tasks/s for ``submit_many`` (sync and async client) and for
``N`` single ``submit`` calls awaited together (async client).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray

import raytask


def main() -> None:
    address, app, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ray.init(address=address, log_to_driver=False)
    client = raytask.get_client(app)
    client.noop.submit_many([{}] * 100)  # warm up

    start = time.perf_counter()
    tasks = client.noop.submit_many([{}] * n)
    many = time.perf_counter() - start
    assert len({t.id for t in tasks}) == n

    async def singles(aclient: raytask.AsyncClusterClient) -> float:
        start = time.perf_counter()
        done = await asyncio.gather(*(aclient.noop.submit() for _ in range(n)))
        assert len(done) == n
        return time.perf_counter() - start

    async def async_many(aclient: raytask.AsyncClusterClient) -> float:
        start = time.perf_counter()
        done = await aclient.noop.submit_many([{}] * n)
        assert len(done) == n
        return time.perf_counter() - start

    async def both() -> tuple[float, float]:
        aclient = await raytask.get_async_client(app)
        return await singles(aclient), await async_many(aclient)

    single, amany = asyncio.run(both())
    print(
        json.dumps(
            {
                "submit_many_per_s": n / many,
                "async_submit_many_per_s": n / amany,
                "async_single_submits_per_s": n / single,
            }
        )
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
