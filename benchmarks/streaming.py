"""Streaming output (SPEC 10): latency, throughput and manager memory (run by hand).

    .venv/bin/python benchmarks/streaming.py [--modes serve_proxy,haproxy] [--tag after]

For each ingress (Serve's proxy, then HAProxy) it runs ``serve run`` of the demo app
(the tests' app, for its ``ticks`` generator) under raytask's launcher and measures, over
``GET /NAME/stream``:

- latency: one idle stream of 200 chunks 20 ms apart; each chunk carries the time it was
  yielded on the replica, the reader notes when it arrived (one machine, one clock): p50, p99;
- one stream's rate: 5,000 chunks yielded as fast as the replica can;
- 64 streams at once, 300 chunks each 10 ms apart (100/s each): each stream's rate, that
  every chunk arrived, once, in order, and the CPU the task manager and the ingress spent
  on them (per chunk);
- the manager's memory: its RSS growth per chunk while a task keeps 20,000 chunks of about
  100 bytes (journal off), for a first such task and for a second one (the first also warms
  the allocator with what dispatch allocates and frees);
- the journal's cost of a long stream, in process (a SQLite journal, the table of a real
  task manager): the bytes written for 20,000 chunks journaled in 1,000 writes, per chunk,
  against the chunks' own JSON bytes.

Results go to ``results/<date>-streaming.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from tests.e2e.serve_run import serve_process  # noqa: E402


def demo(config: dict[str, Any]) -> None:
    config["applications"] = [a for a in config["applications"] if a["name"] == "demo"]
    app = config["applications"][0]
    app["route_prefix"] = "/"
    app["import_path"] = "tests.apps:build"
    app["args"]["journal"] = "off"  # the memory number is the manager's own
    app["deployments"][0]["max_ongoing_requests"] = 128


async def read(http: httpx.AsyncClient, body: dict[str, Any]) -> list[tuple[dict, float]]:
    """Submit one ``ticks`` task and read its stream: ``(chunk, arrival time)`` each."""
    task_id = (await http.post("/ticks/submit", json=body)).json()["task_id"]
    got: list[tuple[dict, float]] = []
    event = ""
    async with http.stream("GET", "/ticks/stream", params={"task_id": task_id}) as response:
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "output":
                got.append((json.loads(line[6:]), time.time()))
            elif line.startswith("data: ") and event == "done":
                return got
    return got


def rate(got: list[tuple[dict, float]]) -> float:
    return (len(got) - 1) / max(1e-9, got[-1][1] - got[0][1])


def in_order(got: list[tuple[dict, float]], count: int) -> bool:
    return [chunk["i"] for chunk, _ in got] == list(range(count))


def processes(title: str) -> list[psutil.Process]:
    """The processes whose command line names ``title`` (Ray sets it to the actor's)."""
    found = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(title in part for part in p.info["cmdline"] or ())
    ]
    if not found:
        raise RuntimeError(f"no {title} process")
    return found


def manager_rss() -> int:
    return int(processes("TaskManager")[0].memory_info().rss)


def cpu_s(found: list[psutil.Process]) -> float:
    return sum(t.user + t.system for t in (p.cpu_times() for p in found))


async def measure(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        await read(http, {"count": 50, "interval_s": 0.01})  # warm
        idle = await read(http, {"count": 200, "interval_s": 0.02})
        latency = sorted((arrived - chunk["t"]) * 1e3 for chunk, arrived in idle)
        one = await read(http, {"count": 5000})
        manager, ingress = processes("TaskManager"), processes("RaytaskIngress")
        cpu = cpu_s(manager), cpu_s(ingress)
        many = await asyncio.gather(
            *(read(http, {"count": 300, "interval_s": 0.01}) for _ in range(64))
        )
        cpu = cpu_s(manager) - cpu[0], cpu_s(ingress) - cpu[1]
        # The first kept stream also warms the allocator (what dispatching 20,000 chunks
        # allocates and frees); the second's growth is what keeping its chunks costs.
        before = manager_rss()
        kept = await read(http, {"count": 20_000, "size": 60})
        warm = manager_rss()
        await read(http, {"count": 20_000, "size": 60})
        after = manager_rss()
    rates = [rate(got) for got in many]
    return {
        "latency_ms_p50": statistics.median(latency),
        "latency_ms_p99": latency[int(len(latency) * 0.99) - 1],
        "one_stream_chunks_per_s": rate(one),
        "one_stream_complete": in_order(one, 5000),
        "64_streams_min_chunks_per_s": min(rates),
        "64_streams_median_chunks_per_s": statistics.median(rates),
        "64_streams_complete_in_order": all(in_order(got, 300) for got in many),
        "64_streams_manager_cpu_us_per_chunk": 1e6 * cpu[0] / (64 * 300),
        "64_streams_ingress_cpu_us_per_chunk": 1e6 * cpu[1] / (64 * 300),
        "manager_bytes_per_kept_chunk_first": (warm - before) / len(kept),
        "manager_bytes_per_kept_chunk": (after - warm) / len(kept),
        "kept_chunk_json_bytes": len(json.dumps(kept[0][0])),
    }


def journal_cost(chunks: int = 20_000, writes: int = 1_000) -> dict[str, Any]:
    """Journal bytes per chunk of one long stream (SQLite), in process."""
    from raytask.core.config import TaskOptions
    from raytask.core.endpoint import encode_chunk
    from raytask.core.table import TaskTable
    from raytask.server.journal import Journal, SQLiteStore

    async def run(folder: str) -> dict[str, Any]:
        journal = Journal(SQLiteStore(Path(folder) / "j.db"), key=b"k" * 32)
        table = TaskTable()
        table.on_change = journal.changed
        record = table.submit("ticks", {}, TaskOptions())
        table.pop_next("ticks")
        await journal.flush()
        before, encoded = journal.bytes, 0
        started = time.perf_counter()
        for group in range(writes):
            values = [
                encode_chunk({"i": i, "t": time.time(), "pad": "x" * 60})
                for i in range(group * chunks // writes, (group + 1) * chunks // writes)
            ]
            encoded += sum(map(len, values))
            table.add_chunks(record.task_id, 1, values)
            await journal.flush()
        seconds = time.perf_counter() - started
        journal.store.close()
        return {
            "chunks": chunks,
            "writes": writes,
            "journal_bytes_per_chunk": (journal.bytes - before) / chunks,
            "chunk_json_bytes": encoded / chunks,
            "chunks_journaled_per_s": chunks / seconds,
        }

    with tempfile.TemporaryDirectory(prefix="raytask-journal-") as folder:
        return asyncio.run(run(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default="", help="added to the results' file name")
    parser.add_argument("--modes", default="serve_proxy,haproxy", help="ingresses to run")
    args = parser.parse_args()
    results: dict[str, Any] = {"date": datetime.date.today().isoformat()}
    results["journal"] = journal_cost()
    print("journal", json.dumps(results["journal"], indent=2), flush=True)
    for mode in args.modes.split(","):
        env = {"RAY_SERVE_ENABLE_HA_PROXY": "1" if mode == "haproxy" else "0"}
        with (
            tempfile.TemporaryDirectory(prefix="raytask-streaming-") as tmp,
            serve_process("app.yaml", Path(tmp), env, demo, launcher=True) as (_, http, _),
        ):
            results[mode] = asyncio.run(measure(str(http.base_url).rstrip("/")))
            print(mode, json.dumps(results[mode], indent=2), flush=True)
    tag = f"-{args.tag}" if args.tag else ""
    out = HERE / "results" / f"{results['date']}-streaming{tag}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
