"""Serve's proxy vs Ray's HAProxy ingress (issue 13, part 2), side by side.

``serve run configs/app.yaml`` (the demo app alone, at ``/``) under raytask's launcher, once
with Serve's own proxy and once with ``RAY_SERVE_ENABLE_HA_PROXY=1``, alternating for
``--rounds``; each time the same load client (``load.py``) sends ``--tasks`` no-op tasks
(concurrency 32, 8 connection pools) and polls until all succeeded.

    .venv/bin/python -m benchmarks.haproxy [--tasks 2000] [--rounds 2]

Writes ``benchmarks/results/<date>-haproxy.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from load import end_to_end  # noqa: E402

from tests.e2e.serve_run import serve_process  # noqa: E402


def demo(config: dict[str, Any]) -> None:
    config["applications"] = [a for a in config["applications"] if a["name"] == "demo"]
    config["applications"][0]["route_prefix"] = "/"
    config["applications"][0]["import_path"] = "tests.apps:build"  # noop and friends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"serve_proxy": [], "haproxy": []}
    for round_ in range(args.rounds):
        order = ("serve_proxy", "haproxy") if round_ % 2 == 0 else ("haproxy", "serve_proxy")
        for mode in order:
            env = {"RAY_SERVE_ENABLE_HA_PROXY": "1"} if mode == "haproxy" else {}
            with (
                tempfile.TemporaryDirectory(prefix="raytask-haproxy-") as tmp,
                serve_process("app.yaml", Path(tmp), env, demo, launcher=True) as (_, http, _),
            ):
                url = str(http.base_url).rstrip("/")
                asyncio.run(end_to_end(url, "noop", {}, 200, 32, 8))  # warm
                numbers = asyncio.run(end_to_end(url, "noop", {}, args.tasks, 32, 8))
                assert numbers["not_succeeded"] == 0 and numbers["http_errors"] == 0, numbers
                runs[mode].append({k: numbers[k] for k in ("submit_per_s", "end_to_end_per_s")})
                print(mode, runs[mode][-1], flush=True)
    median = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    result = {
        "date": datetime.date.today().isoformat(),
        "tasks": args.tasks,
        "runs": runs,
        "median": median,
        "haproxy_vs_serve_proxy": {
            k: median["haproxy"][k] / median["serve_proxy"][k] for k in median["haproxy"]
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{result['date']}-haproxy.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
