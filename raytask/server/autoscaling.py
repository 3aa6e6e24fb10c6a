"""Scale model replicas on the task backlog, including from and to zero.

Serve's default policy only sees requests that reached a deployment handle, but raytask
keeps the backlog in its task manager, so a model deployment would never scale on it.
:class:`QueueDepthPolicy` is a Serve custom autoscaling policy that scales on the manager's
pending tasks plus the tasks in flight for that deployment (or Serve's own count of the
deployment's ongoing requests, when direct calls make that larger)::

    deployments:
      - name: Embeddings
        autoscaling_config:
          min_replicas: 0
          max_replicas: 4
          upscale_delay_s: 2
          downscale_delay_s: 60
          policy:
            policy_function: raytask.autoscaling:QueueDepthPolicy
            policy_kwargs: {target_tasks_per_replica: 32}

Serve applies ``min_replicas``/``max_replicas``, the delays and the scaling factors to the
number the policy returns. The policy runs in the Serve controller's event loop and must
never block there: a daemon thread fetches the depth from the manager and the policy only
reads the cached number.

Serve also has a cold-start path that skips the policy: at zero replicas, a request
average above 0 over ``look_back_period_s`` (30 s by default) starts a replica. A policy
that asked for zero while that average still held the last tasks would make the replicas go
0, 1, 0, 1 until the window cleared. Counting Serve's requests (above) keeps the policy from
asking for zero before the average is 0, so an idle deployment reaches zero
``look_back_period_s`` plus the delay to zero after its last request, and stays there.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import compat

# A child of Serve's logger: the policy runs in the Serve controller, whose "ray.serve"
# handlers write the controller log, where operators look for scaling decisions.
logger = logging.getLogger("ray.serve.raytask.autoscaling")


def desired_replicas(
    pending: int, in_flight: int, target_tasks_per_replica: float, serve_requests: float = 0.0
) -> int:
    """Replicas that would hold ``target_tasks_per_replica`` tasks each (0 with no work).

    ``serve_requests`` is Serve's own count of requests ongoing at the deployment (its
    window average): dispatched tasks and direct calls, such as a synchronous endpoint,
    together. It counts when it exceeds the tasks in flight, so that a deployment busy with
    direct calls keeps its replicas while no task waits.
    """
    load = max(0, pending) + max(in_flight, serve_requests, 0)
    if load == 0:
        return 0
    return math.ceil(load / target_tasks_per_replica)


@dataclass(frozen=True)
class Depth:
    """One reading of a deployment's backlog."""

    pending: int
    in_flight: int
    read_at: float


class QueueDepthPolicy:
    """A Serve custom autoscaling policy on raytask's queue depth.

    Args:
        target_tasks_per_replica: pending plus in-flight tasks one replica should carry;
            usually the deployment's ``max_ongoing_requests`` or a fraction of it.
        refresh_interval_s: how often the background thread reads the depth.
        stale_after_s: a reading older than this is not trusted; the policy then keeps
            the current target rather than guess.
    """

    def __init__(
        self,
        target_tasks_per_replica: float = 4.0,
        refresh_interval_s: float = 1.0,
        stale_after_s: float = 30.0,
    ) -> None:
        if target_tasks_per_replica <= 0:
            raise ValueError("target_tasks_per_replica must be positive")
        self.target = target_tasks_per_replica
        self.refresh_interval_s = refresh_interval_s
        self.stale_after_s = stale_after_s
        self._depths: dict[str, Depth] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_decision: dict[str, int] = {}

    # -- the cached depth ------------------------------------------------------

    def _fetch(self, app_name: str) -> dict[str, dict[str, int]]:
        """``{deployment: {"pending": n, "in_flight": m}}`` from the app's manager (blocking)."""
        import ray

        from ..core.names import NAMESPACE, manager_name

        manager = ray.get_actor(manager_name(app_name), namespace=NAMESPACE)
        return ray.get(manager.depth.remote(), timeout=10)

    def refresh_once(self, app_name: str) -> None:
        """Read the depth now (the background thread calls this in a loop)."""
        depths = self._fetch(app_name)
        now = time.time()
        with self._lock:
            for deployment, numbers in depths.items():
                self._depths[deployment] = Depth(numbers["pending"], numbers["in_flight"], now)

    def _refresh_forever(self, app_name: str) -> None:
        while True:
            try:
                self.refresh_once(app_name)
            except Exception as exc:  # the manager may be starting or restarting
                logger.debug("could not read the raytask queue depth of %s: %s", app_name, exc)
            time.sleep(self.refresh_interval_s)

    def _ensure_refreshing(self, app_name: str) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._refresh_forever, args=(app_name,), name="raytask-depth", daemon=True
            )
            self._thread.start()

    # -- the policy ------------------------------------------------------------

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        """Serve calls this every control-loop tick with an ``AutoscalingContext``."""
        self._ensure_refreshing(ctx.app_name)
        with self._lock:
            depth = self._depths.get(ctx.deployment_name)
        if depth is None or time.time() - depth.read_at > self.stale_after_s:
            return ctx.target_num_replicas, {"raytask_depth": "unknown"}
        serve_requests = compat.serve_requests(ctx)
        desired = desired_replicas(depth.pending, depth.in_flight, self.target, serve_requests)
        if self._last_decision.get(ctx.deployment_name) != desired:
            logger.info(
                "raytask autoscaling %s/%s: %d pending + %d in flight (%.1f requests at Serve)"
                " -> %d replicas wanted",
                ctx.app_name,
                ctx.deployment_name,
                depth.pending,
                depth.in_flight,
                serve_requests,
                desired,
            )
            self._last_decision[ctx.deployment_name] = desired
        state = {
            "raytask_pending": depth.pending,
            "raytask_in_flight": depth.in_flight,
            "raytask_serve_requests": serve_requests,
            "raytask_desired": desired,
        }
        return desired, state
