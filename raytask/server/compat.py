"""Every private or developer API of Ray and Ray Serve that raytask relies on, in one place.

raytask is tested on the Ray versions in :data:`TESTED_RAY`. Importing this module under
another version warns once, naming what may break; each accessor below raises a
:class:`RayCompatError` that names the missing internal instead of an ``AttributeError``
deep in the manager. ``tests/e2e/test_compat.py`` has one contract test per internal, so a
Ray upgrade fails loudly in CI rather than in production.

The internals, and why raytask needs each:

- ``Application._bound_deployment``: :func:`raytask.app` reads each bound model's
  deployment (its class, options and init args) to wrap the class with the task runner.
- ``DeploymentResponse._to_object_ref()``: the manager holds each result as an
  ``ObjectRef`` it owns, without fetching it (needs by-reference handles, the default).
- ``DeploymentResponse._replica_result``: with Serve's router in the manager's event loop,
  ``cancel()`` reaches the replica only through it (see :func:`cancel_on_replica`).
- ``DeploymentHandle._init()`` / ``is_initialized``: build a handle's router before the
  first task instead of during it (the first task used to wait about 4 s).
- ``RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0``: the manager's handles route in its own
  event loop, which saves a thread hop per dispatched task.
- ``ray.experimental.get_object_locations``: tells a value stored in plasma (too large
  to have been inlined, so never a failure) from a small inlined one, without fetching.
- ``AutoscalingContext.total_num_requests`` (a developer API of custom policies).
- The ``node:__internal_head__`` resource: only the head node has it; Serve pins its
  controller with it, and raytask its task manager (see :data:`HEAD_NODE_RESOURCE`).
"""

from __future__ import annotations

import warnings
from typing import Any

import ray
from ray.serve import Application

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


INLINE_BYTES = 100 * 1024
"""Ray inlines task returns up to 100 KiB (``max_direct_call_object_size``); a failure
value is always smaller, so a larger object is a result."""


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
        "it relies on Serve internals (DeploymentResponse._to_object_ref, "
        "DeploymentResponse._replica_result, DeploymentHandle._init, "
        "Application._bound_deployment, ray.experimental.get_object_locations) that may have "
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


async def assigned_object_ref(response: Any) -> ray.ObjectRef:
    """Wait until Serve assigned ``response`` to a replica; its result's ``ObjectRef``.

    The caller owns the ref, and awaiting this never fetches the value.
    """
    to_object_ref = getattr(response, "_to_object_ref", None)
    if to_object_ref is None:
        raise _unsupported("DeploymentResponse._to_object_ref()")
    return await to_object_ref()


def cancel_on_replica(response: Any) -> None:
    """Cancel ``response`` on its replica again, now that it surely has one.

    With Serve's router in the caller's event loop, ``DeploymentResponse.cancel()``
    reaches the replica only through the response's replica result, which Serve stores
    when the assignment is awaited. A cancel that came after the replica was chosen but
    before that await resumed reached nothing (seen in CI: a cancelled 60 s task ran to its
    end), and a second ``cancel()`` returns at once.
    """
    if not hasattr(response, "_replica_result"):
        raise _unsupported("DeploymentResponse._replica_result")
    replica_result = response._replica_result
    if replica_result is not None:
        replica_result.cancel()


def warm_handle(handle: Any) -> None:
    """Build ``handle``'s router now rather than on its first call."""
    if getattr(handle, "is_initialized", True):
        return
    init = getattr(handle, "_init", None)
    if init is None:
        raise _unsupported("DeploymentHandle._init()")
    init()


def stored_values(refs: list[ray.ObjectRef]) -> set[ray.ObjectRef]:
    """Those of the ready ``refs`` that are too large to have been inlined: results,
    never failures, so the caller need not fetch them to tell."""
    try:
        get_locations = ray.experimental.get_object_locations
    except AttributeError:
        raise _unsupported("ray.experimental.get_object_locations") from None
    locations = get_locations(refs)
    large = set()
    for ref in refs:
        info = locations.get(ref) or {}
        if info.get("node_ids") or (info.get("object_size") or 0) > INLINE_BYTES:
            large.add(ref)
    return large


def serve_requests(ctx: Any) -> float:
    """Serve's own window average of requests at a deployment, from a policy's context."""
    return float(getattr(ctx, "total_num_requests", 0.0) or 0.0)
