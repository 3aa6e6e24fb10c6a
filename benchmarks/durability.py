"""What the journal costs and how fast a killed task manager comes back (issue 12).

One local Ray serves the demo app three times: ``off`` (no journal), ``on`` (the default
SQLite journal, in a temporary directory) and ``rec`` (SQLite, one task at a time). Then:

1. HTTP submit rate and end-to-end no-op rate, ``on`` and ``off`` side by side, in
   alternating rounds (``--rounds``), so both see the same machine;
2. ``rec``: one long task running and ``--queued`` no-op tasks queued behind it; the
   journal's bytes and the manager's memory per queued task; then SIGKILL of the
   manager, and the time until a submit is taken again and until every queued task is
   back in the queue.

    .venv/bin/python -m benchmarks.durability [--tasks 2000] [--queued 10000]

Writes ``benchmarks/results/<date>-durability.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
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

from load import end_to_end  # noqa: E402
from local_serve import local_serve  # noqa: E402


def deploy(name: str, journal: str, **config: Any) -> Any:
    import ray
    from ray import serve

    import raytask
    from raytask.core.names import NAMESPACE, manager_name
    from tests.apps import Demo

    demo = Demo.options(max_ongoing_requests=256)
    settings = {"max_queue_size": 1_000_000, "journal": journal, **config}
    serve.run(raytask.app(demo.bind(), config=settings), name=name, route_prefix=f"/{name}")
    return ray.get_actor(manager_name(name), namespace=NAMESPACE)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rates(base: str, app: str, tasks: int) -> dict[str, float]:
    numbers = asyncio.run(end_to_end(f"{base}/{app}", "noop", {}, tasks, 64, 4))
    assert numbers["not_succeeded"] == 0 and numbers["http_errors"] == 0, numbers
    return {
        "submit_per_s": numbers["submit_per_s"],
        "end_to_end_per_s": numbers["end_to_end_per_s"],
    }


def recovery(base: str, manager: Any, journal: Path, queued: int) -> dict[str, float]:
    import ray

    import raytask

    http = httpx.Client(base_url=f"{base}/rec", timeout=60)
    assert http.post("/block/submit", json={"seconds": 600}).status_code == 200
    before = ray.get(manager.stats.remote())
    client = raytask.get_client("rec")
    for start in range(0, queued, 5000):
        client.noop.submit_many([{}] * min(5000, queued - start))
    stats = ray.get(manager.stats.remote())
    assert stats["pending"] == queued, stats
    time.sleep(1)  # the journal's last write
    files = [journal, journal.with_name(journal.name + "-wal")]
    journal_bytes = sum(f.stat().st_size for f in files if f.exists())
    grown = stats["rss_bytes"] - before["rss_bytes"]
    os.kill(stats["pid"], signal.SIGKILL)
    killed = time.monotonic()
    submitted = back = None
    while submitted is None or back is None:
        assert time.monotonic() - killed < 120, "the manager did not come back"
        if submitted is None:
            try:
                if http.post("/noop/submit", json={}, timeout=5).status_code == 200:
                    submitted = time.monotonic() - killed
            except httpx.HTTPError:
                pass
        if back is None:
            try:
                answer = ray.get(manager.stats.remote(), timeout=5)
                if answer["pid"] != stats["pid"] and answer["pending"] >= queued:
                    back = time.monotonic() - killed
            except Exception:
                pass
        time.sleep(0.05)
    return {
        "queued": queued,
        "journal_bytes_per_task": journal_bytes / queued,
        "manager_rss_bytes_per_task": grown / queued,
        "submit_taken_after_kill_s": submitted,
        "all_queued_back_after_kill_s": back,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000, help="no-op tasks per rate run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raytask-durability-"))
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with local_serve(num_cpus=4) as base:
        deploy("off", "off")
        deploy("on", str(work / "on.db"))
        rec = deploy("rec", str(work / "rec.db"), max_in_flight=1)
        for app in ("off", "on"):  # warm both
            rates(base, app, 200)
        for round_ in range(args.rounds):
            for app in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                runs[app].append(rates(base, app, args.tasks))
                print(app, runs[app][-1], flush=True)
        back = recovery(base, rec, work / "rec.db", args.queued)
        print(back, flush=True)
    median = {
        app: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for app, rs in runs.items()
    }
    ratio = {k: median["on"][k] / median["off"][k] for k in median["on"]}
    result = {"median": median, "on_over_off": ratio, "recovery": back, "args": vars(args)}
    stem = args.out / f"{datetime.date.today()}-durability"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    lines = [
        f"# Journal on vs off, and recovery ({datetime.date.today()})",
        "",
        f"{args.rounds} alternating rounds of {args.tasks} no-op tasks per app (medians).",
        "",
        "| | journal off | journal on (SQLite) | on / off |",
        "|---|---|---|---|",
    ]
    for key, label in (
        ("submit_per_s", "HTTP submits/s"),
        ("end_to_end_per_s", "end-to-end tasks/s"),
    ):
        lines.append(
            f"| {label} | {median['off'][key]:.0f} | {median['on'][key]:.0f} | {ratio[key]:.2f} |"
        )
    lines += [
        "",
        f"Recovery with {back['queued']} tasks queued behind a running one:",
        "",
        f"- journal bytes per queued task: {back['journal_bytes_per_task']:.0f}",
        f"- manager memory per queued task: {back['manager_rss_bytes_per_task']:.0f} bytes",
        f"- SIGKILL to a submit taken again: {back['submit_taken_after_kill_s']:.2f} s",
        f"- SIGKILL to every queued task back: {back['all_queued_back_after_kill_s']:.2f} s",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
