"""The task manager's I/O with Serve and the object store, behind one small seam.

:class:`ReplicaCalls` is everything the manager does to run attempts on model replicas:
send a batch, wait for its replica, read its stream without fetching large values, and
read how many replicas run. The manager's unit tests swap in a fake with the same methods; the
real one goes through :mod:`raytask.server.compat` for every Serve internal. It also sets
the Ray gauges of the queue metrics (Ray I/O too).
"""

from __future__ import annotations

from typing import Any

import ray
from ray import serve

from ..core.metrics import METRICS, Sample
from . import compat
from .batch import BATCH_METHOD, BatchItem


class ReplicaCalls:
    """Run batches of task attempts on the model deployments of one Serve application.

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
            ).options(method_name=BATCH_METHOD, stream=True)
        return self._handles[deployment]

    def warm(self, deployments: list[str]) -> None:
        """Build the deployments' handles now, so the first task does not wait for them."""
        for deployment in deployments:
            compat.warm_handle(self._handle(deployment))

    def send(self, deployment: str, batch_id: int, items: list[BatchItem], limit: int) -> Any:
        """Start the attempts ``items`` on one replica of ``deployment``, as batch
        ``batch_id``, at most ``limit`` running at once there; returns the response."""
        return self._handle(deployment).remote(self.app_name, batch_id, items, limit)

    async def assigned(self, response: Any) -> Any:
        """Wait until the response has a replica; returns its stream of item refs."""
        return await compat.assigned_stream(response)

    async def next_ref(self, stream: Any) -> ray.ObjectRef | None:
        """The stream's next item, a small one (fetched if it was not ready yet; None once
        the stream has ended)."""
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None

    async def next_value_ref(self, stream: Any) -> ray.ObjectRef | None:
        """The stream's next item, maybe large: never fetched (None once it has ended)."""
        return await compat.next_unfetched(stream)

    def stored(self, ref: ray.ObjectRef) -> int | None:
        """The size of the ready ``ref`` if it is a value too large to have been inlined
        (so never an error, and never to be read here), else None."""
        return compat.stored_sizes([ref]).get(ref)

    def put(self, value: Any) -> ray.ObjectRef:
        """Put a value in the object store, owned by this process (a restored result)."""
        return ray.put(value)

    async def fetch(self, ref: ray.ObjectRef) -> Any:
        """The value of a small ref (raises the error it holds)."""
        return await ref

    def running_replicas(self) -> dict[str, int]:
        """RUNNING replicas per deployment of the app (blocking: call it in a thread)."""
        return compat.running_replicas(self.app_name)

    def export_metrics(self, samples: list[Sample]) -> None:
        """Set the queue gauges that Ray's Prometheus endpoint exports (``ray_`` prefix)."""
        if self._gauges is None:
            from ray.util.metrics import Gauge

            self._gauges = {m: Gauge(m.name, m.help, tag_keys=m.labels) for m in METRICS}
        for metric, labels, value in samples:
            self._gauges[metric].set(value, labels)
