"""Every private or developer API of Ray and Ray Serve that raytask relies on, in one place.

raytask is tested on the Ray versions in :data:`TESTED_RAY`. Importing this module under
another version warns once, naming what may break; each accessor below raises a
:class:`RayCompatError` that names the missing internal instead of an ``AttributeError``
deep in the manager. ``tests/e2e/test_compat.py`` has one contract test per internal, so a
Ray upgrade fails loudly in CI rather than in production.

The internals, and why raytask needs each:

- ``Application._bound_deployment``: :func:`raytask.app` reads each bound model's
  deployment (its class, options and init args) to wrap the class with the task runner.
- ``DeploymentResponseGenerator._to_object_ref_gen()``: the manager reads a batch's
  streamed items as ``ObjectRef`` s it owns, and holds a large result's without fetching it
  (needs by-reference handles, the default).
- ``ObjectRefGenerator._next_sync(timeout_s=0)``: the next streamed item without fetching
  it (``__anext__`` fetches an item that is not ready yet; see :func:`next_unfetched`).
- ``DeploymentHandle._init()`` / ``is_initialized``: build a handle's router before the
  first task instead of during it (the first task used to wait about 4 s).
- ``RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0``: the manager's handles route in its own
  event loop, which saves a thread hop per dispatched task.
- ``ray.experimental.get_object_locations``: tells a value stored in plasma (too large
  to have been inlined, so never a failure) from a small inlined one, without fetching.
- ``AutoscalingContext.total_num_requests`` (a developer API of custom policies).
- ``ray.experimental.internal_kv``: the app's latest settings (routes, config, models) live
  in the GCS key-value store, so a restarted task manager, whose constructor gets the
  arguments of its first creation, serves the latest deploy (see :class:`SavedSettings`).
- ``ray.serve.context._get_global_client()`` and its ``get_serve_details()``: the running
  replicas of each deployment, read from the controller's dict without ``serve.status()``'s
  pydantic validation (see :func:`running_replicas`).
- The ``node:__internal_head__`` resource: only the head node has it; Serve pins its
  controller with it, and raytask its task manager (see :data:`HEAD_NODE_RESOURCE`).
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import ray
from ray.serve import Application
from ray.serve import context as serve_context

TESTED_RAY = ("2.60.",)
"""Ray versions (prefixes) whose internals the contract tests checked."""

ROUTER_IN_CALLER_LOOP_ENV = {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}
"""Runtime env of the task manager actor: Serve's router runs in the actor's own loop."""

HEAD_NODE_RESOURCE = "node:__internal_head__"
"""A resource only the head node has (0.001 of it pins an actor there)."""


def on_head_node() -> bool:
    """Whether the calling process runs on the head node (it has the head resource)."""
    node_id = ray.get_runtime_context().get_node_id()
    return any(
        node["NodeID"] == node_id and HEAD_NODE_RESOURCE in node.get("Resources", {})
        for node in ray.nodes()
    )


def in_actor() -> bool:
    """Whether the calling process is a Ray actor (not a driver, not without Ray)."""
    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


class SavedSettings:
    """An app's latest task-manager settings in the GCS key-value store.

    Ray restarts a crashed actor with the arguments it was first created with: after a
    redeploy those are out of date. What lives in the GCS lives as long as the cluster
    (and the detached manager) does.

    Args:
        app_name: the Serve application.
    """

    NAMESPACE = "raytask"

    def __init__(self, app_name: str) -> None:
        self.key = f"settings:{app_name}".encode()

    @staticmethod
    def restarted() -> bool:
        """Whether the calling actor is a restart (Ray reran its constructor)."""
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)

    def save(self, value: Any) -> None:
        from ray import cloudpickle
        from ray.experimental.internal_kv import _internal_kv_put

        _internal_kv_put(self.key, cloudpickle.dumps(value), namespace=self.NAMESPACE)

    def load(self) -> Any:
        """The saved value, or None."""
        from ray import cloudpickle
        from ray.experimental.internal_kv import _internal_kv_get

        data = _internal_kv_get(self.key, namespace=self.NAMESPACE)
        return None if data is None else cloudpickle.loads(data)


INLINE_BYTES = 100 * 1024
"""Ray inlines task returns up to 100 KiB (``max_direct_call_object_size``): a larger
streamed item is stored in plasma, a value the manager must not read."""


class RayCompatError(RuntimeError):
    """An internal of Ray Serve that raytask needs is missing from the installed Ray."""


def _unsupported(what: str) -> RayCompatError:
    return RayCompatError(
        f"raytask needs {what}, which Ray {ray.__version__} does not have; raytask is tested "
        f"on Ray {', '.join(v + 'x' for v in TESTED_RAY)} (see raytask/server/compat.py)"
    )


def check_version(version: str = ray.__version__) -> bool:
    """Whether ``version`` is tested; warn once naming what may break if it is not."""
    if version.startswith(TESTED_RAY):
        return True
    warnings.warn(
        f"raytask is tested on Ray {', '.join(v + 'x' for v in TESTED_RAY)}, not {version}: "
        "it relies on Serve internals (DeploymentResponseGenerator._to_object_ref_gen, "
        "ObjectRefGenerator._next_sync, "
        "DeploymentHandle._init, "
        "Application._bound_deployment, ray.experimental.get_object_locations, "
        "_get_global_client().get_serve_details) that may have "
        "changed; run raytask's tests/e2e/test_compat.py against this Ray",
        RuntimeWarning,
        stacklevel=2,
    )
    return False


check_version()


def bound_deployment(app: Application) -> Any:
    """The ``Deployment`` a bound application (``Model.bind()``) was made from."""
    try:
        return app._bound_deployment
    except AttributeError:
        raise _unsupported("Application._bound_deployment") from None


async def assigned_stream(response: Any) -> ray.ObjectRefGenerator:
    """Wait until Serve assigned the streaming ``response`` to a replica; the raw
    ``ObjectRefGenerator`` of its items.

    The caller owns every item and reads only the ones it awaits: unlike iterating the
    response, which fetches each item into the caller's memory, a large item stays unread.
    """
    to_object_ref_gen = getattr(response, "_to_object_ref_gen", None)
    if to_object_ref_gen is None:
        raise _unsupported("DeploymentResponseGenerator._to_object_ref_gen()")
    return await to_object_ref_gen()


async def next_unfetched(stream: ray.ObjectRefGenerator) -> ray.ObjectRef | None:
    """The stream's next item ref once it is ready, never fetched (None at its end).

    ``ObjectRefGenerator.__anext__`` awaits an item that is not ready yet, which fetches it
    into this process (a 50 MB result grew the manager's RSS by 50 MB); its non-blocking
    sync step waits with ``fetch_local=False``, so this polls that, backing off to 20 ms.
    """
    next_sync = getattr(stream, "_next_sync", None)
    if next_sync is None:
        raise _unsupported("ObjectRefGenerator._next_sync()")
    pause = 0.001
    while True:
        try:
            ref = next_sync(timeout_s=0)
        except StopIteration:
            return None
        if not ref.is_nil():
            return ref
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.02)


def warm_handle(handle: Any) -> None:
    """Build ``handle``'s router now rather than on its first call."""
    if getattr(handle, "is_initialized", True):
        return
    init = getattr(handle, "_init", None)
    if init is None:
        raise _unsupported("DeploymentHandle._init()")
    init()


def running_replicas(app_name: str) -> dict[str, int]:
    """RUNNING replicas per deployment of ``app_name`` (blocking; {} without Serve).

    Read from the controller's instance details as they come, a JSON-ready dict:
    ``serve.status()`` validates the same dict into pydantic models first, which pickles
    every deployment's request router class; the manager's capacity refresh, every 2 s,
    spent 11 % of its CPU there under load (``benchmarks/profile.py``).
    """
    client = serve_context._get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return {}
    try:
        app = client.get_serve_details()["applications"].get(app_name)
        if app is None:
            return {}
        return {
            name: sum(1 for r in deployment["replicas"] if r["state"] == "RUNNING")
            for name, deployment in app["deployments"].items()
        }
    except (KeyError, TypeError, AttributeError):
        raise _unsupported(
            "the controller's instance details, as serve.status() reads them"
        ) from None


def stored_sizes(refs: list[ray.ObjectRef]) -> dict[ray.ObjectRef, int]:
    """Those of the ready ``refs`` that are too large to have been inlined, with their
    sizes in bytes: results, never failures, so the caller need not fetch them to tell."""
    try:
        get_locations = ray.experimental.get_object_locations
    except AttributeError:
        raise _unsupported("ray.experimental.get_object_locations") from None
    locations = get_locations(refs)
    large = {}
    for ref in refs:
        info = locations.get(ref) or {}
        size = info.get("object_size") or 0
        if info.get("node_ids") or size > INLINE_BYTES:
            large[ref] = size
    return large


def serve_requests(ctx: Any) -> float:
    """Serve's own window average of requests at a deployment, from a policy's context."""
    return float(getattr(ctx, "total_num_requests", 0.0) or 0.0)
