"""The task manager's I/O with Serve and the object store, behind one small seam.

:class:`ReplicaCalls` is everything the manager does to run attempts on model replicas:
send one, wait for its replica, cancel it, poll results without fetching them, and read
how many replicas run. The manager's unit tests swap in a fake with the same methods; the
real one goes through :mod:`raytask.server.compat` for every Serve internal. It also sets
the Ray gauges of the queue metrics (Ray I/O too).
"""

from __future__ import annotations

from typing import Any

import ray
from ray import serve

from ..core.metrics import METRICS, Sample
from . import compat
from .runner import RUN_METHOD


class ReplicaCalls:
    """Run task attempts on the model deployments of one Serve application.

    Args:
        app_name: the Serve application whose deployments run the tasks.
    """

    def __init__(self, app_name: str) -> None:
        self.app_name = app_name
        self._handles: dict[str, Any] = {}
        self._gauges: dict[Any, Any] | None = None

    def _handle(self, deployment: str) -> Any:
        if deployment not in self._handles:
            self._handles[deployment] = serve.get_deployment_handle(
                deployment, app_name=self.app_name
            ).options(method_name=RUN_METHOD)
        return self._handles[deployment]

    def warm(self, deployments: list[str]) -> None:
        """Build the deployments' handles now, so the first task does not wait for them."""
        for deployment in deployments:
            compat.warm_handle(self._handle(deployment))

    def send(
        self, deployment: str, method: str, kwargs: dict[str, Any], attempt: tuple[str, int]
    ) -> Any:
        """Start ``method(**kwargs)`` on a replica of ``deployment``, as attempt
        ``(task id, attempt number)`` (its progress reports name it); returns the response."""
        return self._handle(deployment).remote(method, kwargs, (self.app_name, *attempt))

    async def assigned(self, response: Any) -> ray.ObjectRef:
        """Wait until the response has a replica; returns its result's ref (unfetched)."""
        return await compat.assigned_object_ref(response)

    def cancel(self, response: Any, on_replica: bool = False) -> None:
        """Cancel the request; ``on_replica`` once it surely has a replica (see compat)."""
        if on_replica:
            compat.cancel_on_replica(response)
        else:
            response.cancel()

    def ready(self, refs: list[ray.ObjectRef]) -> tuple[list[ray.ObjectRef], set[ray.ObjectRef]]:
        """Those of ``refs`` that are ready, and which of them are large stored values."""
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        return ready, (compat.stored_values(ready) if ready else set())

    def put(self, value: Any) -> ray.ObjectRef:
        """Put a value in the object store, owned by this process (a restored result)."""
        return ray.put(value)

    async def fetch(self, ref: ray.ObjectRef) -> Any:
        """The value of a small, ready ref (a result or an ``AttemptFailed``)."""
        return await ref

    def running_replicas(self) -> dict[str, int]:
        """RUNNING replicas per deployment of the app (blocking: call it in a thread)."""
        app = serve.status().applications.get(self.app_name)
        if app is None:
            return {}
        return {
            name: status.replica_states.get("RUNNING", 0)
            for name, status in app.deployments.items()
        }

    def export_metrics(self, samples: list[Sample]) -> None:
        """Set the queue gauges that Ray's Prometheus endpoint exports (``ray_`` prefix)."""
        if self._gauges is None:
            from ray.util.metrics import Gauge

            self._gauges = {m: Gauge(m.name, m.help, tag_keys=m.labels) for m in METRICS}
        for metric, labels, value in samples:
            self._gauges[metric].set(value, labels)
