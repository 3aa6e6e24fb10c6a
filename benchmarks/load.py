"""The load client every system gets: httpx ``AsyncClient``s on loopback.

Task systems are driven through the BentoML-style task routes they share
(``POST /NAME/submit``, ``GET /NAME/status?task_id=``, ``GET /NAME/get?task_id=``), so one
client measures raytask and BentoML alike. Each workload returns plain numbers (seconds,
counts) for the runner to aggregate.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

DONE = {"success", "completed"}
FAILED = {"failure", "failed", "cancelled", "canceled", "expired"}


@dataclass
class Burst:
    """The outcome of sending ``n`` requests at a fixed concurrency."""

    seconds: float
    latencies: list[float]
    task_ids: list[str]
    codes: Counter[int] = field(default_factory=Counter)
    errors: int = 0  # transport errors (no HTTP answer at all)

    @property
    def ok(self) -> int:
        return self.codes[200]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values`` by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@asynccontextmanager
async def pools(base_url: str, clients: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """``clients`` independent connection pools (one shared pool caps near 550 req/s)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    made = [
        httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) for _ in range(clients)
    ]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


async def burst(
    clients: list[httpx.AsyncClient],
    n: int,
    concurrency: int,
    request: Callable[[httpx.AsyncClient, int], Any],
) -> Burst:
    """Send ``n`` requests (``request(client, i)``) from ``concurrency`` workers."""
    latencies: list[float] = []
    ids: list[str] = []
    codes: Counter[int] = Counter()
    errors = 0
    counter = iter(range(n))

    async def worker(index: int) -> None:
        nonlocal errors
        client = clients[index % len(clients)]
        for i in counter:
            start = time.perf_counter()
            try:
                response = await request(client, i)
            except httpx.HTTPError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)
            codes[response.status_code] += 1
            if response.status_code == 200 and response.headers.get("content-type", "").startswith(
                "application/json"
            ):
                task_id = response.json().get("task_id")
                if task_id:
                    ids.append(task_id)

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return Burst(time.perf_counter() - start, latencies, ids, codes, errors)


def submit_numbers(sent: Burst) -> dict[str, float]:
    """Rate and latency of a burst of submits."""
    return {
        "submit_per_s": sent.ok / sent.seconds,
        "submit_p50_ms": percentile(sent.latencies, 0.5) * 1e3,
        "submit_p99_ms": percentile(sent.latencies, 0.99) * 1e3,
    }


def memory_numbers(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Each measured process's memory before and after, in MiB."""
    numbers: dict[str, float] = {}
    for name in before:
        numbers[f"{name}_rss_before_mib"] = before[name] / 2**20
        numbers[f"{name}_rss_after_mib"] = after[name] / 2**20
    return numbers


def submitter(endpoint: str, body: dict[str, Any]) -> Callable[[httpx.AsyncClient, int], Any]:
    return lambda client, _: client.post(f"/{endpoint}/submit", json=body)


async def status_of(client: httpx.AsyncClient, endpoint: str, task_id: str) -> str:
    response = await client.get(f"/{endpoint}/status", params={"task_id": task_id})
    response.raise_for_status()
    return response.json()["status"]


async def wait_all(
    clients: list[httpx.AsyncClient],
    endpoint: str,
    task_ids: list[str],
    concurrency: int,
    timeout_s: float = 600,
) -> Counter[str]:
    """Poll each task's status until it is final; count the final statuses (and the
    polls, as ``status_polls``: a slower system is polled more per task)."""
    finals: Counter[str] = Counter()
    todo = iter(task_ids)
    deadline = time.monotonic() + timeout_s

    async def worker(index: int) -> None:
        client = clients[index % len(clients)]
        for task_id in todo:
            while True:
                status = await status_of(client, endpoint, task_id)
                finals["status_polls"] += 1
                if status in DONE or status in FAILED:
                    finals[status] += 1
                    break
                if time.monotonic() > deadline:
                    finals["timed_out"] += 1
                    break
                await asyncio.sleep(0.01)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return finals


async def end_to_end(
    base_url: str, endpoint: str, body: dict[str, Any], n: int, concurrency: int, clients: int
) -> dict[str, Any]:
    """Submit ``n`` tasks, then poll until all are final: submit rate and end-to-end rate."""
    async with pools(base_url, clients) as made:
        start = time.perf_counter()
        sent = await burst(made, n, concurrency, submitter(endpoint, body))
        finals = await wait_all(made, endpoint, sent.task_ids, concurrency)
        total = time.perf_counter() - start
    return {
        **submit_numbers(sent),
        "end_to_end_s": total,
        "end_to_end_per_s": n / total,
        "succeeded": sum(finals[s] for s in DONE),
        "not_succeeded": n - sum(finals[s] for s in DONE),
        "http_errors": n - sent.ok,
        "status_polls_per_task": finals["status_polls"] / n,
    }


async def submit_only(
    base_url: str, path: str, n: int, concurrency: int, clients: int
) -> dict[str, Any]:
    """``n`` POSTs to ``path`` (the Serve floor has nothing to poll)."""
    async with pools(base_url, clients) as made:
        sent = await burst(made, n, concurrency, lambda c, _: c.post(path, json={}))
    return {**submit_numbers(sent), "http_errors": n - sent.ok}


async def latencies(
    base_url: str, endpoint: str, probes: int, load_concurrency: int
) -> dict[str, Any]:
    """p50/p99 of submit, status and get, unloaded and under a no-op submit load.

    status and get are timed on tasks finished beforehand, so a deep queue under load
    slows nothing but the calls themselves.
    """
    async with pools(base_url, 1) as (client,), pools(base_url, 4) as loaders:
        warm = await burst([client], 20, 4, submitter(endpoint, {}))
        await wait_all([client], endpoint, warm.task_ids, 4)
        finished = warm.task_ids

        async def probe_round() -> dict[str, list[float]]:
            timed: dict[str, list[float]] = {"submit": [], "status": [], "get": []}
            for i in range(probes):
                task_id = finished[i % len(finished)]
                calls = {
                    "submit": client.post(f"/{endpoint}/submit", json={}),
                    "status": client.get(f"/{endpoint}/status", params={"task_id": task_id}),
                    "get": client.get(f"/{endpoint}/get", params={"task_id": task_id}),
                }
                for name, call in calls.items():
                    start = time.perf_counter()
                    response = await call
                    timed[name].append(time.perf_counter() - start)
                    response.raise_for_status()
            return timed

        unloaded = await probe_round()
        stop = asyncio.Event()

        async def load(index: int) -> None:
            loader = loaders[index % len(loaders)]
            while not stop.is_set():
                await loader.post(f"/{endpoint}/submit", json={})

        background = [asyncio.create_task(load(i)) for i in range(load_concurrency)]
        await asyncio.sleep(1.0)  # let the load reach a steady state
        loaded = await probe_round()
        stop.set()
        await asyncio.gather(*background)
    result: dict[str, Any] = {}
    for setting, timed in (("unloaded", unloaded), ("loaded", loaded)):
        for name, values in timed.items():
            result[f"{name}_{setting}_p50_ms"] = percentile(values, 0.5) * 1e3
            result[f"{name}_{setting}_p99_ms"] = percentile(values, 0.99) * 1e3
    return result


async def sleepers(base_url: str, n: int, seconds: float, concurrency: int) -> dict[str, Any]:
    """``n`` tasks that each sleep ``seconds``: the time until all have succeeded."""
    async with pools(base_url, 4) as made:
        start = time.perf_counter()
        sent = await burst(made, n, concurrency, submitter("sleep", {"seconds": seconds}))
        finals = await wait_all(made, "sleep", sent.task_ids, concurrency)
        total = time.perf_counter() - start
    return {
        "total_s": total,
        "serial_s": n * seconds,
        "succeeded": sum(finals[s] for s in DONE),
    }


async def backlog(
    base_url: str, n: int, concurrency: int, clients: int, rss: Callable[[], dict[str, int]]
) -> dict[str, Any]:
    """Queue ``n`` tasks that cannot finish soon; count answers and the memory they take."""
    before = rss()
    async with pools(base_url, clients) as made:
        sent = await burst(made, n, concurrency, submitter("sleep", {"seconds": 3600}))
    await asyncio.sleep(1.0)
    after = rss()
    result: dict[str, Any] = {
        "accepted": sent.ok,
        "rejected_429": sent.codes[429],
        "other_errors": n - sent.ok - sent.codes[429],
        "submit_per_s": sent.ok / sent.seconds,
    }
    result.update(memory_numbers(before, after))
    for name in before:
        result[f"{name}_bytes_per_task"] = (after[name] - before[name]) / max(1, sent.ok)
    return result


async def large_result(
    base_url: str, size_mb: float, rss: Callable[[], dict[str, int]]
) -> dict[str, Any]:
    """One ``size_mb`` MB result: the time of its ``get`` and the servers' RSS around it."""
    async with pools(base_url, 1) as (client,):
        before = rss()
        response = await client.post("/blob/submit", json={"size_mb": size_mb})
        response.raise_for_status()
        task_id = response.json()["task_id"]
        await wait_all([client], "blob", [task_id], 1)
        start = time.perf_counter()
        got = await client.get("/blob/get", params={"task_id": task_id})
        seconds = time.perf_counter() - start
        got.raise_for_status()
        after = rss()
    if len(got.content) != int(size_mb * 2**20):
        raise RuntimeError(f"got {len(got.content)} bytes, expected {size_mb} MB")
    return {"get_s": seconds, "get_mb_per_s": size_mb / seconds, **memory_numbers(before, after)}
