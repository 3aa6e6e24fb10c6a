"""raytask in cluster against Ray Serve's Celery-based async inference, side by side.

Issue 13's in-cluster target: at least 4x Ray Serve's own async inference
(``ray.serve.task_consumer`` over Celery with a real Redis). One local Ray serves both:

- ``raytask``: the demo app's ``noop`` task (model deployment ``max_ongoing_requests`` 64);
  a driver's ``submit_many`` of ``--tasks`` tasks, until all succeeded;
- ``serve_celery``: a ``@task_consumer`` deployment with a no-op ``@task_handler`` (Serve's
  defaults: Celery's thread pool, its default consumer concurrency), fed by the driver's
  ``enqueue_task_sync`` through the same adapter class, until every task's Celery status
  is ``SUCCESS``. Broker and result backend: a ``redis-server`` (Debian's package) this
  script starts on a free port and stops by PID.

    .venv/bin/python -m benchmarks.celery_async [--tasks 3000] [--rounds 3]

Needs ``celery`` (``make bench`` installs the ``bench`` extra). Writes
``benchmarks/results/<date>-celery.json``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from dispatch import deploy_raytask, raytask_rate  # noqa: E402
from local_serve import local_serve  # noqa: E402
from sides import alternate, write  # noqa: E402

from tests.support import redis_server  # noqa: E402

QUEUE = "raytask-bench"


def celery_config(redis_url: str) -> Any:
    from ray.serve.schema import CeleryAdapterConfig, TaskProcessorConfig

    return TaskProcessorConfig(
        queue_name=QUEUE,
        adapter_config=CeleryAdapterConfig(broker_url=redis_url, backend_url=redis_url),
    )


def deploy_celery(config: Any) -> None:
    from ray import serve
    from ray.serve.task_consumer import task_consumer, task_handler

    @serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
    @task_consumer(task_processor_config=config)
    class Consumer:
        @task_handler(name="noop")
        def noop(self) -> None:
            return None

    serve.run(Consumer.bind(), name="celery", route_prefix="/celery")


def celery_rate(adapter: Any, tasks: int) -> float:
    start = time.perf_counter()
    ids = [adapter.enqueue_task_sync("noop").id for _ in range(tasks)]
    for task_id in ids:  # most are done by the time the loop reaches them
        while adapter.get_task_status_sync(task_id).status != "SUCCESS":
            time.sleep(0.005)
    return tasks / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    from ray.serve.task_consumer import instantiate_adapter_from_config

    with (
        tempfile.TemporaryDirectory(prefix="raytask-celery-") as scratch,
        redis_server(Path(scratch)) as redis_url,
        local_serve(num_cpus=4),
    ):
        config = celery_config(redis_url)
        deploy_celery(config)
        adapter = instantiate_adapter_from_config(config)
        deploy_raytask("rt", 64)
        celery_rate(adapter, 200), raytask_rate("rt", 200)  # warm
        runs = {
            "serve_celery": lambda: celery_rate(adapter, args.tasks),
            "raytask": lambda: raytask_rate("rt", args.tasks),
        }
        try:
            rates = alternate(runs, args.rounds)
        finally:
            # Celery's results unregister from Redis when collected: collect them while it
            # still runs, or each one retries a stopped Redis at exit.
            gc.collect()
    write(args.out, "celery", "tasks_per_s", rates, baseline="serve_celery")


if __name__ == "__main__":
    main()
