"""Batch jobs (SPEC 11): throughput, the manager's memory, upload speed (run by hand).

    .venv/bin/python -m benchmarks.batch_jobs throughput [--lines 20000] [--rounds 2]
    .venv/bin/python -m benchmarks.batch_jobs memory [--lines 1000000]
    .venv/bin/python -m benchmarks.batch_jobs upload [--mb 200]
    .venv/bin/python -m benchmarks.batch_jobs embeddings [--texts 20000] [--rounds 2]

One local Ray serves the tests' demo app (its ``noop`` task), or the embedding app, with
the journal and the batch files in a fresh temporary ``RAYTASK_HOME``:

- ``throughput``: the same no-op lines as one batch job (upload, create, poll until
  ``completed``) and as HTTP ``submit_many`` (1,000 a request, 4 at a time, until every task
  succeeded), alternating rounds; lines/s from the first byte sent.
- ``memory``: one job of a million no-op lines: the task manager's RSS (sampled every 0.5 s:
  before, highest, after) and the journal's size before and after, with the time of each
  phase (upload, validation, run).
- ``upload``: ``POST /v1/files`` of a file of that many MB (lines of 100 bytes): MB/s.
- ``embeddings``: one-text embedding lines as a batch job against the same texts sent to
  the replica's handle in batches of its ``max_batch_size`` (32), alternating rounds.

Results go to ``benchmarks/results/<date>-batch-<kind>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ["RAYTASK_HOME"] = tempfile.mkdtemp(prefix="raytask-bench-batch-")  # start empty

from local_serve import local_serve  # noqa: E402
from sides import alternate  # noqa: E402

ENDED = ("completed", "failed", "cancelled", "expired")


def jsonl(url: str, bodies: Iterator[dict[str, Any]]) -> bytes:
    return b"".join(
        json.dumps({"custom_id": str(i), "method": "POST", "url": url, "body": body}).encode()
        + b"\n"
        for i, body in enumerate(bodies)
    )


def run_job(http: httpx.Client, data: bytes, url: str, poll_s: float = 0.2) -> dict[str, Any]:
    """Upload ``data``, run it as a job on ``url``, and return its times and last state."""
    start = time.perf_counter()
    upload = http.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"})
    upload.raise_for_status()
    uploaded = time.perf_counter()
    body = {"input_file_id": upload.json()["id"], "endpoint": url}
    batch = http.post("/v1/batches", json=body).json()
    started = None
    while batch["status"] not in ENDED:
        time.sleep(poll_s)
        batch = http.get(f"/v1/batches/{batch['id']}").json()
        if started is None and batch["status"] != "validating":
            started = time.perf_counter()
    end = time.perf_counter()
    assert batch["status"] == "completed", batch
    return {
        "batch": batch,
        "upload_s": uploaded - start,
        "validate_s": (started or end) - uploaded,
        "run_s": end - (started or end),
        "total_s": end - start,
    }


def manager() -> psutil.Process:
    for process in psutil.process_iter(["cmdline"]):
        if any("TaskManager" in part for part in process.info["cmdline"] or ()):
            return process
    raise RuntimeError("no TaskManager process")


def demo_app(base: str, **settings: Any) -> str:
    """The tests' demo app, its replica taking 128 requests at once (so the replica's
    concurrency is not what both sides measure)."""
    from ray import serve

    import raytask
    from tests.apps import Demo

    app = raytask.app(Demo.options(max_ongoing_requests=128).bind(), config=settings)
    serve.run(app, name="demo", route_prefix="/demo")
    return f"{base}/demo"


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    from sides import until_succeeded

    import raytask

    with local_serve(num_cpus=4) as base:
        url = demo_app(base)
        http = httpx.Client(base_url=url, timeout=300)
        client = raytask.SyncHTTPClient(url, timeout=300)
        data = jsonl("/noop", ({} for _ in range(args.lines)))
        run_job(http, jsonl("/noop", ({} for _ in range(500))), "/noop")  # warm
        inputs = [{}] * args.lines

        def as_job() -> float:
            return args.lines / run_job(http, data, "/noop")["total_s"]

        def as_submit_many() -> float:
            return until_succeeded(
                "demo", "noop", lambda: client.noop.submit_many(inputs), args.lines
            )

        rates = alternate({"batch_job": as_job, "http_submit_many": as_submit_many}, args.rounds)
    return {"lines": args.lines, "lines_per_s": rates}


def memory(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(os.environ["RAYTASK_HOME"])
    with local_serve(num_cpus=4) as base:
        url = demo_app(base)
        http = httpx.Client(base_url=url, timeout=600)
        run_job(http, jsonl("/noop", ({} for _ in range(2000))), "/noop")  # warm
        process = manager()
        journal_before = journal_bytes(home)
        rss_before = process.memory_info().rss
        highest = [rss_before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                highest.append(process.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        data = jsonl("/noop", ({} for _ in range(args.lines)))
        try:
            times = run_job(http, data, "/noop", poll_s=1.0)
        finally:
            stop.set()
            sampler.join()
        time.sleep(2)
        rss_after = process.memory_info().rss
    mb = 1024 * 1024
    return {
        "lines": args.lines,
        "file_mb": len(data) / mb,
        "rss_before_mb": rss_before / mb,
        "rss_highest_mb": max(highest) / mb,
        "rss_after_mb": rss_after / mb,
        "rss_growth_highest_mb": (max(highest) - rss_before) / mb,
        "journal_before_bytes": journal_before,
        "journal_after_bytes": journal_bytes(home),
        "journal_growth_bytes": journal_bytes(home) - journal_before,
        "upload_mb_per_s": len(data) / mb / times["upload_s"],
        "validate_s": times["validate_s"],
        "run_s": times["run_s"],
        "lines_per_s": args.lines / times["run_s"],
        "request_counts": times["batch"]["request_counts"],
    }


def journal_bytes(home: Path) -> int:
    """The SQLite journal's bytes, its write-ahead log included."""
    return sum(path.stat().st_size for path in (home / "journal").glob("demo.db*"))


def upload(args: argparse.Namespace) -> dict[str, Any]:
    line = b'{"custom_id": "%08d", "method": "POST", "url": "/noop", "body": {"pad": "%s"}}\n'
    lines = args.mb * 1024 * 1024 // 100
    data = b"".join(line % (i, b"x" * 20) for i in range(lines))
    with local_serve(num_cpus=4) as base:
        url = demo_app(base)
        http = httpx.Client(base_url=url, timeout=600)
        http.post("/v1/files", files={"file": ("w", data[:1_000_000])}, data={"purpose": "batch"})
        rates = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            answer = http.post(
                "/v1/files", files={"file": ("big", data)}, data={"purpose": "batch"}
            )
            seconds = time.perf_counter() - start
            assert answer.json()["bytes"] == len(data), answer.text
            rates.append(len(data) / 1024 / 1024 / seconds)
            print("upload MB/s", round(rates[-1], 1), flush=True)
    return {"mb": len(data) / 1024 / 1024, "mb_per_s": rates}


def embeddings(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    texts = [f"text number {i} about topic {i % 13}" for i in range(args.texts)]
    with local_serve(num_cpus=4) as base:
        from ray import serve

        from deployments.embeddings import build

        serve.run(build({"max_batch_size": 32}), name="emb", route_prefix="/emb")
        model = serve.get_deployment_handle("Embeddings", app_name="emb")
        http = httpx.Client(base_url=f"{base}/emb", timeout=600)

        def direct() -> float:
            async def run() -> float:
                start = time.perf_counter()
                chunks = [texts[i : i + 32] for i in range(0, len(texts), 32)]
                await asyncio.gather(*(model.embed.remote(chunk) for chunk in chunks))
                return len(texts) / (time.perf_counter() - start)

            return asyncio.run(run())

        data = jsonl("/embed", ({"texts": [text]} for text in texts))

        def as_job() -> float:
            return len(texts) / run_job(http, data, "/embed", poll_s=0.5)["total_s"]

        run_job(http, jsonl("/embed", ({"texts": [t]} for t in texts[:256])), "/embed")  # warm
        rates = alternate({"direct_batched": direct, "batch_job": as_job}, args.rounds)
    return {"texts": args.texts, "texts_per_s": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=("throughput", "memory", "upload", "embeddings"))
    parser.add_argument("--lines", type=int, default=None)
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--haproxy",
        action="store_true",
        help="Ray's HAProxy ingress (as make run), not Serve's proxy",
    )
    args = parser.parse_args()
    os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1" if args.haproxy else "0"
    args.lines = args.lines or (1_000_000 if args.kind == "memory" else 20_000)
    result = {
        "date": datetime.date.today().isoformat(),
        "ingress": "haproxy" if args.haproxy else "serve_proxy",
        **globals()[args.kind](args),
    }
    for key, values in list(result.items()):
        if isinstance(values, dict) and all(isinstance(v, list) for v in values.values()):
            medians = {k: statistics.median(v) for k, v in values.items()}
            result[f"median_{key}"] = medians
    print(json.dumps(result, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-haproxy" if args.haproxy else ""
    path = args.out / f"{result['date']}-batch-{args.kind}{suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
