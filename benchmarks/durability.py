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

Writes ``benchmarks/results/<date>-durability.md`` (and ``.json``). ``--recovery-only``: only
the SIGKILL, its time split into Ray's part (the kill to the new constructor), the
constructor and the first submit taken, beside the restart of an actor that does nothing
(:class:`Floor`); each run is added to ``results/<date>-restart.json``.
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
from concurrent.futures import ThreadPoolExecutor
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
    killed, killed_at = time.monotonic(), time.time()
    with ThreadPoolExecutor(2) as pool:  # two probes, so neither waits on the other
        submitted = pool.submit(_first_submit, http, killed)
        back = pool.submit(_all_back, manager, stats["pid"], queued + 1, killed)
        submitted, back = submitted.result(), back.result()
    again = ray.get(manager.stats.remote())
    # Ray's part: the kill to the constructor (Ray restarts the actor in a worker, which
    # imports the manager's module: ray.serve and all).
    constructed = again["started_at"] - killed_at
    return {
        "queued": queued,
        "constructor_began_after_kill_s": constructed,
        "manager_constructor_s": again["ready_s"],
        "submit_taken_after_constructor_began_s": submitted - constructed,
        "journal_bytes_per_task": journal_bytes / queued,
        "manager_rss_bytes_per_task": grown / queued,
        "submit_taken_after_kill_s": submitted,
        "all_queued_back_after_kill_s": back,
    }


class Floor:
    """An actor restarted as the manager is (same options), that does nothing: what a
    restart costs before any of raytask's own work. ``imports``: its class load imports
    what the manager's does (ray.serve and raytask)."""

    def __init__(self, imports: bool) -> None:
        if imports:
            import raytask.server.manager  # noqa: F401

    def pid(self) -> int:
        return os.getpid()


def floor(imports: bool) -> float:
    """Seconds from a SIGKILL of a :class:`Floor` actor to its restarted self's answer."""
    import ray

    from raytask.server.compat import ROUTER_IN_CALLER_LOOP_ENV

    options = {"max_restarts": -1, "num_cpus": 0, "max_concurrency": 10_000}
    env = {"env_vars": ROUTER_IN_CALLER_LOOP_ENV}
    actor = ray.remote(Floor).options(runtime_env=env, **options).remote(imports)
    pid = ray.get(actor.pid.remote())
    time.sleep(1)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < 120:
        try:
            if ray.get(actor.pid.remote(), timeout=5) != pid:
                ray.kill(actor)
                return time.monotonic() - killed
        except Exception:  # restarting
            time.sleep(0.02)
    raise AssertionError("the floor actor did not come back in 120 s")


def _first_submit(http: httpx.Client, killed: float) -> float:
    """Seconds from the kill to the first submit taken (503s until then), tried every 20 ms."""
    while time.monotonic() - killed < 120:
        try:
            if http.post("/noop/submit", json={}, timeout=5).status_code == 200:
                return time.monotonic() - killed
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise AssertionError("no submit was taken in 120 s")


def _all_back(manager: Any, pid: int, tasks: int, killed: float) -> float:
    """Seconds from the kill to a new manager (not ``pid``) that knows ``tasks`` tasks."""
    import ray

    while time.monotonic() - killed < 120:
        try:
            answer = ray.get(manager.stats.remote(), timeout=5)
            known = sum(n for c in answer["counts"].values() for n in c.values())
            if answer["pid"] != pid and known >= tasks:
                return time.monotonic() - killed
        except Exception:  # restarting
            pass
        time.sleep(0.02)
    raise AssertionError("the manager did not come back in 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000, help="no-op tasks per rate run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--recovery-only", action="store_true", help="only the SIGKILL part (no rate rounds)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raytask-durability-"))
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    if args.recovery_only:
        with local_serve(num_cpus=4) as base:
            rec = deploy("rec", str(work / "rec.db"), max_in_flight=1)
            back = recovery(base, rec, work / "rec.db", args.queued)
            for imports in (False, True):
                back[f"floor_{'imports' if imports else 'bare'}_s"] = floor(imports)
        print(json.dumps(back, indent=2))
        path = args.out / f"{datetime.date.today()}-restart.json"  # each run adds its own
        kept = json.loads(path.read_text()) if path.exists() else {"runs": []}
        kept["runs"].append(back)
        path.write_text(json.dumps(kept, indent=2))
        return
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
