"""Batched dispatch (issue 13): in-cluster end to end, against Serve's own handle floor.

One local Ray runs the demo app with the same model deployment (``max_ongoing_requests``
64) once per dispatch batch size, and a plain copy of the same deployment for the floor.
Alternating rounds, side by side:

1. **raytask in-cluster end to end**: a driver's ``submit_many`` of ``--tasks`` no-op tasks,
   then the time until every one succeeded (read from the manager's counts).
2. **Serve's handle floor**: the same driver awaiting the plain deployment's handle,
   ``--concurrency`` calls at a time, for the same number of no-op calls.

    .venv/bin/python -m benchmarks.dispatch [--tasks 3000] [--rounds 3] [--sizes 1,32]

``--sizes``: ``dispatch_batch_size`` values; 1 sends one task per Serve request, as before
batched dispatch. Writes ``benchmarks/results/<date>-dispatch.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from local_serve import local_serve  # noqa: E402
from sides import alternate, until_succeeded, write  # noqa: E402

MAX_ONGOING = 64


def deploy_raytask(name: str, batch_size: int) -> None:
    from ray import serve

    import raytask
    from tests.apps import Demo

    journal = str(Path(tempfile.mkdtemp(prefix=f"raytask-dispatch-{name}-")) / "j.db")
    settings = {"max_queue_size": 1_000_000, "journal": journal}
    settings["dispatch_batch_size"] = batch_size
    demo = Demo.options(max_ongoing_requests=MAX_ONGOING)
    serve.run(raytask.app(demo.bind(), config=settings), name=name, route_prefix=f"/{name}")


def deploy_floor() -> Any:
    from ray import serve

    @serve.deployment(max_ongoing_requests=MAX_ONGOING, ray_actor_options={"num_cpus": 0.5})
    class Plain:
        def noop(self) -> None:
            return None

    return serve.run(Plain.bind(), name="floor", route_prefix="/floor")


def raytask_rate(app: str, tasks: int) -> float:
    import raytask

    client = raytask.get_client(app)
    return until_succeeded(app, "noop", lambda: client.noop.submit_many([{}] * tasks), tasks)


def floor_rate(handle: Any, calls: int, concurrency: int) -> float:
    async def run() -> float:
        noop = handle.noop
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await noop.remote()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return calls / (time.perf_counter() - start)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=MAX_ONGOING)
    parser.add_argument("--sizes", default="1,32")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with local_serve(num_cpus=4):
        runs = {}
        for size in sizes:
            deploy_raytask(f"b{size}", size)
            raytask_rate(f"b{size}", 200)  # warm
            runs[f"raytask_batch_{size}"] = lambda app=f"b{size}": raytask_rate(app, args.tasks)
        floor = deploy_floor()
        floor_rate(floor, 200, args.concurrency)
        runs["serve_handle_floor"] = lambda: floor_rate(floor, args.tasks, args.concurrency)
        rates = alternate(runs, args.rounds)
    write(args.out, "dispatch", "tasks_per_s", rates, baseline="serve_handle_floor")


if __name__ == "__main__":
    main()
