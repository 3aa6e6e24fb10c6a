"""raytask side by side with BentoML tasks and Ray Serve's HTTP floor, in one run.

    make bench                         # or: .venv/bin/python benchmarks/run.py
    .venv/bin/python benchmarks/run.py --repeats 1 --backlog 2000   # a quick look

Each repeat starts every system on 127.0.0.1, drives it with the same load client
(``load.py``), and stops what it started, by PID:

- **raytask**: the demo app (``noop``, ``sleep``, ``blob``) on a local Ray;
- **raytask-haproxy**: the same behind Ray's HAProxy ingress (``make run``'s default), with
  its own Serve floor (**serve-floor-haproxy**);
- **serve-floor**: a no-op Serve deployment on the same Ray, called over HTTP: the cost of
  one request through Serve's proxy, which every raytask submit also pays;
- **bentoml**: a ``@bentoml.task`` service with the same methods (``servers/
  bentoml_service.py``), in its own virtualenv (``.venv-bentoml``, made if missing),
  started with ``bentoml serve``.

It writes ``results/<date>.json`` (every repeat's raw numbers) and ``results/<date>.md``
(median and min-max per metric, and the headline ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import load
import psutil
from local_serve import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENTOML_VENV = ROOT / ".venv-bentoml"
BENTOML_VERSION = "1.4.40"
NOOP_TASKS = 2000
CONCURRENCY = 32
SPLIT_CLIENTS = 8


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- processes -----------------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants (gone ones skipped)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def uss(processes: list[psutil.Process]) -> int:
    """Memory unique to these processes (shared pages, like Ray's object store, excluded)."""
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_full_info().uss
    return total


def rss(pid: int) -> int:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def stop_tree(process: subprocess.Popen[bytes], marker: str | None = None) -> None:
    """SIGTERM the process we started, then SIGKILL whatever of its tree is left.

    ``marker`` also matches processes that left the tree (Ray daemons reparent to init)
    by a unique string in their command line, such as our Ray temp dir.
    """
    family = tree(process.pid)
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        log(f"pid {process.pid} ignored SIGTERM for 60 s; killing its tree")
    if marker:
        for candidate in psutil.process_iter(["cmdline"]):
            if any(marker in part for part in candidate.info["cmdline"] or []):
                family.append(candidate)
    for member in family:
        with contextlib.suppress(psutil.Error):
            member.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def wait_ready(check: Callable[[], bool], process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 300
    while not check():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready after 300 s")
        time.sleep(0.5)


# -- the systems ---------------------------------------------------------------------


@contextlib.contextmanager
def raytask_system(workdir: Path, haproxy: bool = False) -> Iterator[dict[str, Any]]:
    """The raytask demo app and the Serve floor on one local Ray; with ``haproxy``, behind
    Ray's HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY=1``) instead of Serve's proxy."""
    ready = workdir / "raytask-ready.json"
    temp_dir = tempfile.mkdtemp(prefix="rtb-", dir="/tmp")
    port = free_port()
    out = open(workdir / "raytask-server.log", "ab")
    process = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "servers" / "raytask_server.py"),
            str(ready),
            str(port),
            temp_dir,
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=ROOT,
        env={**os.environ, "RAY_SERVE_ENABLE_HA_PROXY": "1" if haproxy else "0"},
    )
    try:
        wait_ready(ready.exists, process, "the raytask server")
        info = json.loads(ready.read_text())
        info["base_url"] = f"http://127.0.0.1:{port}"
        info["pid"], info["temp_dir"] = process.pid, temp_dir  # its tree, its Ray's marker
        info["rss"] = lambda: {
            "manager": rss(info["manager_pid"]),
            "server_uss": uss(tree(process.pid)),
        }
        yield info
    finally:
        stop_tree(process, marker=temp_dir)
        out.close()
        ready.unlink(missing_ok=True)


def ensure_bentoml() -> Path:
    bentoml = BENTOML_VENV / "bin" / "bentoml"
    if not bentoml.exists():
        log(f"creating {BENTOML_VENV} with bentoml=={BENTOML_VERSION}")
        subprocess.run([sys.executable, "-m", "venv", str(BENTOML_VENV)], check=True)
        subprocess.run(
            [str(BENTOML_VENV / "bin" / "pip"), "install", "-q", f"bentoml=={BENTOML_VERSION}"],
            check=True,
        )
    return bentoml


@contextlib.contextmanager
def bentoml_system(workdir: Path) -> Iterator[dict[str, Any]]:
    """``bentoml serve`` of ``servers/bentoml_service.py`` with BentoML's defaults."""
    port = free_port()
    home = tempfile.mkdtemp(prefix="bentoml-home-", dir=workdir)
    out = open(workdir / "bentoml-server.log", "ab")
    process = subprocess.Popen(
        [
            str(ensure_bentoml()),
            "serve",
            "bentoml_service:Bench",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--working-dir",
            str(HERE / "servers"),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=workdir,
        env={**os.environ, "BENTOML_HOME": home, "BENTOML_DO_NOT_TRACK": "true"},
    )
    base_url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_ready(ready, process, "bentoml serve")
        yield {
            "base_url": base_url,
            "pid": process.pid,
            "rss": lambda: {"server_uss": uss(tree(process.pid))},
        }
    finally:
        stop_tree(process, marker=home)
        out.close()


# -- the workloads -------------------------------------------------------------------


def task_workloads(system: dict[str, Any], args: argparse.Namespace) -> dict[str, dict]:
    url = system["base_url"]
    results: dict[str, dict] = {}
    if args.quick:  # the headline workloads only
        log(f"  noop_{SPLIT_CLIENTS}_clients")
        results[SPLIT] = asyncio.run(
            load.end_to_end(url, "noop", {}, args.tasks, CONCURRENCY, SPLIT_CLIENTS)
        )
        log("  latency")
        results["latency"] = asyncio.run(load.latencies(url, "noop", args.probes, 16))
        return results
    for clients in (1, SPLIT_CLIENTS):
        name = f"noop_{clients}_clients"
        log(f"  {name}")
        results[name] = asyncio.run(
            load.end_to_end(url, "noop", {}, args.tasks, CONCURRENCY, clients)
        )
    log("  latency")
    results["latency"] = asyncio.run(load.latencies(url, "noop", args.probes, 16))
    log("  sleep")
    results["sleep"] = asyncio.run(load.sleepers(url, 200, 0.05, CONCURRENCY))
    log("  large_result")
    results["large_result"] = asyncio.run(load.large_result(url, 100, system["rss"]))
    return results


def quiesce(base_url: str, timeout_s: float = 600) -> None:
    """Wait until the raytask app has nothing pending or in flight (from ``GET /queue``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queue = httpx.get(f"{base_url}/queue", timeout=30).json()
        busy = sum(e["pending"] + e["in_progress"] for e in queue["endpoints"].values())
        if busy == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the raytask app was still busy after {timeout_s} s")


def run_raytask(args: argparse.Namespace, workdir: Path, haproxy: bool = False) -> dict[str, dict]:
    with raytask_system(workdir, haproxy) as system:
        url = system["base_url"]
        results: dict[str, dict] = {}
        for clients in (1, SPLIT_CLIENTS):
            log(f"  floor: noop_{clients}_clients")
            results[f"floor:noop_{clients}_clients"] = asyncio.run(
                load.submit_only(url, "/floor", args.tasks, CONCURRENCY, clients)
            )
        results.update(task_workloads(system, args))
        if haproxy or args.quick:  # the rest measures the manager, not the ingress
            return results
        log("  backlog")
        quiesce(url)
        results["backlog"] = asyncio.run(
            load.backlog(url, args.backlog, CONCURRENCY, SPLIT_CLIENTS, system["rss"])
        )
        # Last: its tasks queue behind the backlog, so they cannot disturb another workload.
        log("  in_cluster")
        answer = subprocess.run(
            [
                sys.executable,
                str(HERE / "servers" / "in_cluster.py"),
                system["gcs_address"],
                system["app"],
                str(args.in_cluster_tasks),
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        results["in_cluster"] = json.loads(answer.stdout.strip().splitlines()[-1])
        return results


def run_bentoml(args: argparse.Namespace, workdir: Path) -> dict[str, dict]:
    with bentoml_system(workdir) as system:
        results = task_workloads(system, args)
        if args.quick:
            return results
        log("  backlog")
        results["backlog"] = asyncio.run(
            load.backlog(
                system["base_url"], args.backlog, CONCURRENCY, SPLIT_CLIENTS, system["rss"]
            )
        )
        return results


# -- the report ----------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """system → workload → metric → {median, min, max} over the repeats."""
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in runs:
        for workload, metrics in run["results"].items():
            for metric, value in metrics.items():
                slot = values.setdefault(run["system"], {}).setdefault(workload, {})
                slot.setdefault(metric, []).append(float(value))
    return {
        system: {
            workload: {
                metric: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                for metric, v in metrics.items()
            }
            for workload, metrics in workloads.items()
        }
        for system, workloads in values.items()
    }


def cell(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "-"
    fmt = (lambda x: f"{x:,.0f}") if abs(stats["median"]) >= 100 else (lambda x: f"{x:.3g}")
    if stats["min"] == stats["max"]:
        return fmt(stats["median"])
    return f"{fmt(stats['median'])} ({fmt(stats['min'])}-{fmt(stats['max'])})"


def ratio(
    runs: list[dict[str, Any]], a: tuple[str, str, str], b: tuple[str, str, str]
) -> float | None:
    """The median over the repeats of each repeat's own ratio ``a / b`` (both systems ran
    in that repeat, side by side), so a box that drifts between repeats moves both."""

    def value(system: str, repeat: int, workload: str, metric: str) -> float | None:
        for run in runs:
            if run["system"] == system and run["repeat"] == repeat:
                return run["results"].get(workload, {}).get(metric)
        return None

    ratios = []
    for repeat in sorted({run["repeat"] for run in runs}):
        top, bottom = value(a[0], repeat, *a[1:]), value(b[0], repeat, *b[1:])
        if top is not None and bottom:
            ratios.append(top / bottom)
    return statistics.median(ratios) if ratios else None


SPLIT = f"noop_{SPLIT_CLIENTS}_clients"
# (title, (system, workload, metric) over (system, workload, metric), target)
E2E, SUBMITS = "end_to_end_per_s", "submit_per_s"
HEADLINES = [
    ("end-to-end no-op tasks/s, raytask behind HAProxy / BentoML (8 client pools)",
     ("raytask-haproxy", SPLIT, E2E), ("bentoml", SPLIT, E2E), ">= 1.5"),
    ("end-to-end no-op tasks/s, raytask behind HAProxy / BentoML (1 client pool)",
     ("raytask-haproxy", "noop_1_clients", E2E), ("bentoml", "noop_1_clients", E2E), ">= 1.5"),
    ("end-to-end no-op tasks/s, raytask behind HAProxy / behind Serve's proxy (8 pools)",
     ("raytask-haproxy", SPLIT, E2E), ("raytask", SPLIT, E2E), ""),
    ("HTTP submits/s while tasks run, raytask / Serve floor, both behind HAProxy (8 pools)",
     ("raytask-haproxy", SPLIT, SUBMITS), ("serve-floor-haproxy", SPLIT, SUBMITS), ""),
    ("end-to-end no-op tasks/s, raytask / BentoML (8 client pools)",
     ("raytask", SPLIT, E2E), ("bentoml", SPLIT, E2E), ""),
    ("end-to-end no-op tasks/s, raytask / BentoML (1 client pool)",
     ("raytask", "noop_1_clients", E2E), ("bentoml", "noop_1_clients", E2E), ""),
    ("HTTP submits/s while tasks run, raytask / Serve floor (8 client pools)",
     ("raytask", SPLIT, SUBMITS), ("serve-floor", SPLIT, SUBMITS), ">= 0.9"),
    ("HTTP submits/s while tasks run, raytask / Serve floor (1 client pool)",
     ("raytask", "noop_1_clients", SUBMITS), ("serve-floor", "noop_1_clients", SUBMITS), ">= 0.9"),
    ("HTTP submits/s into a backlog (nothing runs), raytask / Serve floor (8 pools)",
     ("raytask", "backlog", SUBMITS), ("serve-floor", SPLIT, SUBMITS), ">= 0.9"),
    ("HTTP submits/s, raytask / BentoML (8 client pools)",
     ("raytask", SPLIT, SUBMITS), ("bentoml", SPLIT, SUBMITS), ""),
    ("200 x 50 ms sleeps, BentoML time / raytask time",
     ("bentoml", "sleep", "total_s"), ("raytask", "sleep", "total_s"), ""),
]  # fmt: skip

SINGLE = [
    (
        "manager bytes per queued task (backlog)",
        ("raytask", "backlog", "manager_bytes_per_task"),
        "<= 2048",
    ),
    ("manager RSS growth across a 100 MB result, MiB", None, "~ 0"),
    ("in-cluster submit_many tasks/s", ("raytask", "in_cluster", "submit_many_per_s"), ">= 3000"),
    (
        "in-cluster async submit_many tasks/s",
        ("raytask", "in_cluster", "async_submit_many_per_s"),
        ">= 3000",
    ),
    (
        "in-cluster single async submits/s",
        ("raytask", "in_cluster", "async_single_submits_per_s"),
        "",
    ),
]


def markdown(summary: dict, meta: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    lines = [
        f"# Benchmark results, {meta['date']}",
        "",
        f"Machine: {meta['machine']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + f". Repeats: {meta['repeats']}; every cell is the median (min-max).",
        f"Settings: {meta['settings']}.",
        "",
        "## Headline ratios (the median of each repeat's own ratio)",
        "",
        "| Ratio | Value | Target |",
        "|---|---|---|",
    ]
    for title, a, b, target in HEADLINES:
        value = ratio(runs, a, b)
        lines.append(f"| {title} | {'-' if value is None else f'{value:.2f}'} | {target} |")
    for title, key, target in SINGLE:
        if key is None:
            large = summary.get("raytask", {}).get("large_result", {})
            try:
                growth = (
                    large["manager_rss_after_mib"]["median"]
                    - large["manager_rss_before_mib"]["median"]
                )
                value = f"{growth:+.2f}"
            except KeyError:
                value = "-"
        else:
            stats = summary.get(key[0], {}).get(key[1], {}).get(key[2])
            value = cell(stats)
        lines.append(f"| {title} | {value} | {target} |")
    known = ("raytask", "raytask-haproxy", "bentoml", "serve-floor", "serve-floor-haproxy")
    systems = [s for s in known if s in summary]
    workloads: list[str] = []
    for system in summary.values():
        workloads += [w for w in system if w not in workloads]
    for workload in workloads:
        owners = [s for s in systems if workload in summary[s]]
        lines += ["", f"## {workload}", "", "| Metric | " + " | ".join(owners) + " |"]
        lines.append("|---" * (len(owners) + 1) + "|")
        metrics: list[str] = []
        for s in owners:
            metrics += [m for m in summary[s][workload] if m not in metrics]
        for metric in metrics:
            row = [cell(summary[s][workload].get(metric)) for s in owners]
            lines.append(f"| {metric} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("ray", "raytask", "httpx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    bentoml_python = BENTOML_VENV / "bin" / "python"
    if bentoml_python.exists():
        answer = subprocess.run(
            [str(bentoml_python), "-c", "import bentoml; print(bentoml.__version__)"],
            capture_output=True,
            text=True,
        )
        found["bentoml"] = answer.stdout.strip() or "?"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default="raytask,raytask-haproxy,bentoml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=NOOP_TASKS, help="no-op tasks per run")
    parser.add_argument("--probes", type=int, default=200, help="latency probes per setting")
    parser.add_argument("--backlog", type=int, default=20_000, help="tasks in the backlog run")
    parser.add_argument("--in-cluster-tasks", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--tag", default="", help="suffix of the result files' names")
    parser.add_argument(
        "--quick", action="store_true", help="only the 8-pool end to end and the latencies"
    )
    args = parser.parse_args()

    runners: dict[str, Callable[[argparse.Namespace, Path], dict[str, dict]]] = {
        "raytask": run_raytask,
        "raytask-haproxy": lambda args, workdir: run_raytask(args, workdir, haproxy=True),
        "bentoml": run_bentoml,
    }
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(runners)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {sorted(runners)}")
    if "bentoml" in systems:
        ensure_bentoml()

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="raytask-bench-") as scratch:
        for repeat in range(args.repeats):
            # Alternate the order so that drift (thermal, page cache) favours nobody.
            order = systems if repeat % 2 == 0 else systems[::-1]
            for system in order:
                log(f"repeat {repeat + 1}/{args.repeats}: {system}")
                results = runners[system](args, Path(scratch))
                runs.append({"system": system, "repeat": repeat, "results": results})
                if system.startswith("raytask"):  # the floor shares raytask's Ray and ingress
                    floor = {
                        k.removeprefix("floor:"): results.pop(k)
                        for k in list(results)
                        if k.startswith("floor:")
                    }
                    name = system.replace("raytask", "serve-floor")
                    runs.append({"system": name, "repeat": repeat, "results": floor})

    today = datetime.date.today().isoformat()
    meta = {
        "date": today,
        "machine": f"{os.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.machine()}",
        "versions": versions(),
        "repeats": args.repeats,
        "settings": f"{args.tasks} no-op tasks at concurrency {CONCURRENCY} over 1 or "
        f"{SPLIT_CLIENTS} httpx pools; {args.probes} latency probes; backlog {args.backlog}; "
        f"in-cluster {args.in_cluster_tasks}",
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    summary = summarise(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = today + (f"-{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1)
    )
    report = markdown(summary, meta, runs)
    (args.out / f"{stem}.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
