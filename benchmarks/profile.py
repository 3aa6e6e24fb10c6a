"""Where an HTTP no-op task's CPU goes: raytask (behind HAProxy) and BentoML, side by side.

    .venv/bin/python benchmarks/profile.py [--tasks 2000] [--rounds 2]

The headline workload of ``run.py`` (``--tasks`` no-op tasks, 32 concurrent over 8
clients: submit, status polls, get) against each system in turn, alternating, while:

- every process of the system is charged its CPU seconds (``psutil``: user + system),
  named by its role (``ray::TaskManager``, the ingress replica, the model replica, Serve's
  proxy and controller, HAProxy, the raylet, the GCS; BentoML's API and runner processes);
- ``py-spy record`` samples raytask's Python processes (non-blocking, 100 Hz, only the
  thread holding the GIL: Python's CPU, not its waits), whose samples are folded into the
  functions and the packages that spent them.

On a box whose cores are all busy (this 2-core one), tasks/s is the cores divided by the
CPU a task costs, so the per-task CPU of each process is the answer to "what stands in the
way". Writes ``results/<date>-profile.md`` and ``.json``. Needs ``py-spy`` (the bench
extra) and ptrace rights over the processes (root, or ``ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import load
import psutil
from run import CONCURRENCY, SPLIT_CLIENTS, bentoml_system, log, raytask_system, tree

HERE = Path(__file__).resolve().parent
PY_SPY_RATE = 100
ROLES = (  # (role, a pattern of its command line); the first match names a process
    ("manager", r"ray::TaskManager"),
    ("ingress", r"ServeReplica:[^:]+:RaytaskIngress"),
    ("model replica", r"ServeReplica:[^:]+:Demo"),
    ("floor replica", r"ServeReplica:floor"),
    ("serve proxy", r"ray::ProxyActor"),
    ("serve controller", r"ray::ServeController"),
    ("haproxy", r"haproxy"),
    ("raylet", r"raylet"),
    ("gcs", r"gcs_server"),
    ("bentoml", r"bentoml"),
)
SAMPLED = ("manager", "ingress", "model replica", "serve proxy")


def role(process: psutil.Process) -> str:
    try:
        line = " ".join(process.cmdline()) or process.name()
    except psutil.Error:
        return "gone"
    for name, pattern in ROLES:
        if re.search(pattern, line):
            return name
    return "other ray" if "ray" in line else "other"


def family(system: dict[str, Any]) -> list[psutil.Process]:
    """Every process of ``system``: its tree, and the Ray daemons (reparented to init)
    that carry its temp dir in their command line, with their trees."""
    found = {p.pid: p for p in tree(system["pid"])}
    marker = system.get("temp_dir")
    if marker:
        for candidate in psutil.process_iter(["cmdline"]):
            if any(marker in part for part in candidate.info["cmdline"] or []):
                found.update((p.pid, p) for p in tree(candidate.pid))
    found.pop(psutil.Process().pid, None)
    return list(found.values())


def cpu(processes: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
    return seconds


def fold(raw: Path) -> dict[str, Counter[str]]:
    """py-spy's raw (collapsed) stacks: samples by leaf function, by any function on the
    stack (each once a stack), and by the package of the leaf."""
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        n = int(count)
        leaf[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
        packages[package(frames[-1])] += n
    return {"leaf": leaf, "inclusive": inclusive, "packages": packages}


def package(frame: str) -> str:
    """The package of a frame's file, as py-spy names it (``ray/serve/_private/router.py``
    is ``ray.serve``, ``asyncio/tasks.py`` is ``asyncio``, ``threading.py`` ``threading``)."""
    path = frame[frame.rfind("(") + 1 :].split(":")[0]
    parts = path.split("/")
    if parts[0] == "ray" and len(parts) > 2:
        return f"ray.{parts[1]}"
    return parts[0].removesuffix(".py") or "?"


def measure(system: dict[str, Any], name: str, tasks: int, work: Path) -> dict[str, Any]:
    processes = family(system)
    roles = {p.pid: role(p) for p in processes}
    spies = []
    local = Path(sys.executable).parent / "py-spy"  # the bench extra's, in this venv
    spy = shutil.which("py-spy") or (str(local) if local.exists() else None)
    if spy is not None and name == "raytask":  # BentoML's processes are only charged CPU
        for pid, what in roles.items():
            if what in SAMPLED:
                out = work / f"{name}-{what.replace(' ', '-')}-{pid}.txt"
                command = [spy, "record", "--pid", str(pid), "--rate", str(PY_SPY_RATE)]
                command += ["--nonblocking", "--gil", "--format", "raw", "--output", str(out)]
                spies.append((what, out, subprocess.Popen(command, stdout=subprocess.DEVNULL)))
        time.sleep(1)  # py-spy attaches
    me = psutil.Process()
    before, mine = cpu(processes), me.cpu_times()
    started = time.perf_counter()
    numbers = asyncio.run(
        load.end_to_end(system["base_url"], "noop", {}, tasks, CONCURRENCY, SPLIT_CLIENTS)
    )
    wall = time.perf_counter() - started
    after, mine_after = cpu(processes), me.cpu_times()
    for _, _, process in spies:
        process.send_signal(signal.SIGINT)  # py-spy writes what it has
    for _, _, process in spies:
        process.wait(timeout=60)
    assert numbers["not_succeeded"] == 0 and numbers["http_errors"] == 0, numbers
    by_role: Counter[str] = Counter()
    for pid, seconds in after.items():
        by_role[roles[pid]] += seconds - before.get(pid, seconds)
    client = (mine_after.user + mine_after.system) - (mine.user + mine.system)
    folded = {what: fold(out) for what, out, _ in spies if out.exists()}
    return {
        "tasks": tasks,
        "wall_s": wall,
        "tasks_per_s": tasks / wall,
        "status_polls_per_task": numbers["status_polls_per_task"],
        "cpu_ms_per_task": {r: 1000 * s / tasks for r, s in by_role.most_common()},
        "server_cpu_ms_per_task": 1000 * sum(by_role.values()) / tasks,
        "client_cpu_ms_per_task": 1000 * client / tasks,
        "samples": {
            what: {kind: counts.most_common(25) for kind, counts in f.items()}
            for what, f in folded.items()
        },
    }


def markdown(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    lines = [
        f"# Where an HTTP no-op task's CPU goes ({datetime.date.today()})",
        "",
        f"`benchmarks/profile.py --tasks {args.tasks} --rounds {args.rounds}`: {args.tasks} "
        f"no-op tasks, {CONCURRENCY} concurrent over {SPLIT_CLIENTS} clients, alternating "
        f"rounds; {psutil.cpu_count()} cores. CPU ms per task, median of the rounds.",
        "",
        "| | " + " | ".join(runs) + " |",
        "|---|" + "---|" * len(runs),
    ]
    median = {name: _median(rs) for name, rs in runs.items()}
    keys = ("tasks_per_s", "status_polls_per_task", "server_cpu_ms_per_task")
    for key in (*keys, "client_cpu_ms_per_task"):
        lines.append(f"| {key} | " + " | ".join(f"{m[key]:.2f}" for m in median.values()) + " |")
    every = sorted({r for m in median.values() for r in m["cpu_ms_per_task"]})
    for what in every:
        cells = [f"{m['cpu_ms_per_task'].get(what, 0):.2f}" for m in median.values()]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    last = runs.get("raytask", [{}])[-1].get("samples", {})
    for what, kinds in last.items():
        total = sum(n for _, n in kinds["packages"]) or 1
        lines += ["", f"## raytask {what}: py-spy, last round ({total} samples)", ""]
        lines.append("| by package of the leaf | share |")
        lines.append("|---|---|")
        lines += [f"| {p} | {100 * n / total:.0f} % |" for p, n in kinds["packages"][:12]]
        lines += ["", "| functions on the stack (inclusive) | share |", "|---|---|"]
        lines += [f"| `{f}` | {100 * n / total:.0f} % |" for f, n in kinds["inclusive"][:25]]
    return "\n".join(lines) + "\n"


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def mid(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    roles = {r for run in rounds for r in run["cpu_ms_per_task"]}
    return {
        **{
            k: mid([r[k] for r in rounds])
            for k in ("tasks_per_s", "status_polls_per_task", "server_cpu_ms_per_task")
        },
        "client_cpu_ms_per_task": mid([r["client_cpu_ms_per_task"] for r in rounds]),
        "cpu_ms_per_task": {
            what: mid([r["cpu_ms_per_task"].get(what, 0.0) for r in rounds]) for what in roles
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raytask-profile-"))
    runs: dict[str, list[dict[str, Any]]] = {"raytask": [], "bentoml": []}
    systems = {
        "raytask": lambda: raytask_system(work, haproxy=True),
        "bentoml": lambda: bentoml_system(work),
    }
    for round_ in range(args.rounds):  # one system up at a time, as run.py does
        for name in ("raytask", "bentoml") if round_ % 2 == 0 else ("bentoml", "raytask"):
            log(f"round {round_ + 1}: {name}")
            with systems[name]() as system:
                asyncio.run(
                    load.end_to_end(system["base_url"], "noop", {}, 200, CONCURRENCY, SPLIT_CLIENTS)
                )
                runs[name].append(measure(system, name, args.tasks, work))
            log(f"  {runs[name][-1]['tasks_per_s']:.0f} tasks/s")
    stem = args.out / f"{datetime.date.today()}-profile"
    stem.with_suffix(".json").write_text(json.dumps(runs, indent=2))
    text = markdown(runs, args)
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
