"""Side-by-side rounds for the by-hand benchmarks: alternate, take medians, write JSON."""

from __future__ import annotations

import datetime
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def alternate(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run every entry once per round, in reverse order every other round (so neither
    side always runs first on a warming machine); each run returns a rate."""
    rates: dict[str, list[float]] = {kind: [] for kind in runs}
    for round_ in range(rounds):
        order = list(runs)
        for kind in order if round_ % 2 == 0 else order[::-1]:
            rates[kind].append(runs[kind]())
            print(kind, round(rates[kind][-1]), flush=True)
    return rates


def write(out: Path, name: str, unit: str, rates: dict[str, list[float]], baseline: str) -> None:
    """Write ``<out>/<date>-<name>.json``: every rate, the medians, and their ratios to
    ``baseline``'s median; print it too."""
    median = {kind: statistics.median(values) for kind, values in rates.items()}
    result: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        unit: rates,
        f"median_{unit}": median,
        f"ratio_vs_{baseline}": {kind: rate / median[baseline] for kind, rate in median.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{result['date']}-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def until_succeeded(app: str, endpoint: str, submit: Callable[[], Any], tasks: int) -> float:
    """Tasks/s from calling ``submit`` (which queues ``tasks`` tasks and returns their
    handles) until all succeeded: a long-poll on the last one, then the manager's counts."""
    import ray

    from raytask.core.names import NAMESPACE, manager_name

    manager = ray.get_actor(manager_name(app), namespace=NAMESPACE)

    def succeeded() -> int:
        return ray.get(manager.stats.remote())["counts"].get(endpoint, {}).get("success", 0)

    before = succeeded()
    start = time.perf_counter()
    last = submit()[-1]
    ray.get(manager.wait.remote(last.id, 60))
    while succeeded() < before + tasks:
        time.sleep(0.005)
    return tasks / (time.perf_counter() - start)
