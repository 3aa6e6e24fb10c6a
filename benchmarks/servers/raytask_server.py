"""Start a local Ray with Serve on 127.0.0.1 serving two apps, for the benchmark runner.

    python benchmarks/servers/raytask_server.py READY_FILE PORT TEMP_DIR

- ``bench`` at ``/``: the raytask demo app (``noop``, ``sleep``, ``blob`` task endpoints);
- ``floor`` at ``/floor``: a no-op Serve deployment called over HTTP, the cost of one
  request through Serve's proxy, which every raytask submit also pays.

When both are up it writes READY_FILE (JSON: the port, the GCS address and the manager
actor's pid). It runs until SIGTERM or SIGINT, then shuts Serve and Ray down.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402
from local_serve import local_serve  # noqa: E402
from ray import serve  # noqa: E402

import raytask  # noqa: E402
from raytask.core.names import NAMESPACE, manager_name  # noqa: E402
from tests.apps import Demo  # noqa: E402

APP = "bench"
# Room for 256 concurrent 50 ms sleeps; the demo's default of 16 suits a laptop, not a benchmark.
REPLICA_MAX_ONGOING = 256
FLOOR_MAX_ONGOING = 1024


@serve.deployment(max_ongoing_requests=FLOOR_MAX_ONGOING, ray_actor_options={"num_cpus": 0})
class Floor:
    """Answers every request with a submit-shaped body and does nothing else."""

    async def __call__(self, request: object) -> dict[str, str]:
        return {"task_id": "0" * 32, "status": "pending"}


def main() -> None:
    ready_file, port, temp_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    with local_serve(port=port, temp_dir=temp_dir):
        demo = Demo.options(max_ongoing_requests=REPLICA_MAX_ONGOING)
        # The journal as a user gets it (SQLite), in this run's own directory; set
        # RAYTASK_BENCH_JOURNAL=off to measure without it.
        journal = os.environ.get("RAYTASK_BENCH_JOURNAL") or str(Path(temp_dir) / "journal.db")
        config = {"max_queue_size": 1_000_000, "journal": journal}
        # RAYTASK_BENCH_CONFIG: JSON of more AppConfig settings, to compare settings by hand.
        config.update(json.loads(os.environ.get("RAYTASK_BENCH_CONFIG") or "{}"))
        serve.run(raytask.app(demo.bind(), config=config), name=APP, route_prefix="/")
        serve.run(Floor.bind(), name="floor", route_prefix="/floor")
        manager = ray.get_actor(manager_name(APP), namespace=NAMESPACE)
        info = {
            "port": port,
            "app": APP,
            "gcs_address": ray.get_runtime_context().gcs_address,
            "manager_pid": ray.get(manager.stats.remote())["pid"],
            "driver_pid": os.getpid(),
        }
        Path(ready_file).write_text(json.dumps(info))
        stop.wait()


if __name__ == "__main__":
    main()
