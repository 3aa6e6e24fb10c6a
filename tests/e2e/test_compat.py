"""Contract tests: one per Ray / Ray Serve internal that raytask.server.compat relies on.

Each runs the real internal on the session's real Ray, the way raytask uses it, so a Ray
upgrade that renames or changes one fails here, by name, instead of in production.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest
import ray
from ray import serve

from deployments.demo import Demo
from raytask.server import compat
from raytask.server.runner import RUN_METHOD, AttemptFailed

from ..support import wait_for
from .conftest import App

pytestmark = pytest.mark.e2e


def test_the_installed_ray_is_a_tested_one() -> None:
    assert compat.check_version(ray.__version__)
    with pytest.warns(RuntimeWarning, match="_to_object_ref"):
        assert not compat.check_version("9.0.0")


def test_bound_deployment_gives_the_class_options_and_init_args() -> None:
    deployment = compat.bound_deployment(Demo.bind())
    assert deployment.func_or_class is Demo.func_or_class
    assert deployment.name == "Demo" and deployment.max_ongoing_requests == 16
    assert deployment.init_args == () and deployment.init_kwargs == {}
    assert deployment.options(func_or_class=Demo.func_or_class).name == "Demo"


def _run_handle(app: App) -> serve.handle.DeploymentHandle:
    return serve.get_deployment_handle("Demo", app_name=app.name).options(method_name=RUN_METHOD)


async def test_assigned_object_ref_is_an_owned_ref_of_the_result(main_app: App) -> None:
    response = _run_handle(main_app).remote("wordcount", {"text": "a b a"})
    ref = await compat.assigned_object_ref(response)
    assert isinstance(ref, ray.ObjectRef)
    assert await ref == {"words": 3, "top": ["a", "b"]}


async def test_cancel_on_replica_stops_a_running_attempt(main_app: App) -> None:
    blocking = lambda: main_app.http.post("/blocking", json={}).json()  # noqa: E731
    assert blocking() == 0
    response = _run_handle(main_app).remote("block", {"seconds": 60})
    ref = await compat.assigned_object_ref(response)
    await asyncio.to_thread(wait_for, lambda: blocking() == 1, 30, "block to start")
    assert response._replica_result is not None  # what cancel_on_replica reaches for
    compat.cancel_on_replica(response)
    await asyncio.to_thread(wait_for, lambda: blocking() == 0, 20, "block to stop")
    with pytest.raises((ray.exceptions.TaskCancelledError, asyncio.CancelledError)):
        await ref


def test_warm_handle_builds_the_router(root_app: App) -> None:
    # An app this process never called through a handle (the driver shares routers).
    handle = serve.get_deployment_handle("Demo", app_name=root_app.name)
    assert not handle.is_initialized
    compat.warm_handle(handle)
    assert handle.is_initialized


def test_the_router_loop_flag_is_read_from_the_manager_env(main_app: App) -> None:
    @ray.remote(num_cpus=0, runtime_env={"env_vars": compat.ROUTER_IN_CALLER_LOOP_ENV})
    def flag() -> bool:
        from ray.serve._private.constants import RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP

        return RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP

    assert ray.get(flag.remote()) is False
    env = main_app.stats()["env"]  # and the manager runs with it
    assert env == compat.ROUTER_IN_CALLER_LOOP_ENV


async def test_stored_values_tells_results_from_small_values(main_app: App) -> None:
    handle = _run_handle(main_app)
    large = await compat.assigned_object_ref(handle.remote("blob", {"size_mb": 0.2}))
    failed = await compat.assigned_object_ref(handle.remote("fail", {"message": "x" * 9000}))
    small = await compat.assigned_object_ref(handle.remote("wordcount", {"text": "a"}))
    refs = [large, failed, small]
    await asyncio.to_thread(ray.wait, refs, num_returns=3, timeout=60, fetch_local=False)
    assert compat.stored_values(refs) == {large}
    # the largest failure the runner returns stays small enough to be inlined
    assert isinstance(await failed, AttemptFailed)
    assert compat.INLINE_BYTES > len((await failed).error.encode())


def test_autoscaling_context_has_total_num_requests() -> None:
    from ray.serve.config import AutoscalingContext

    assert "total_num_requests" in inspect.signature(AutoscalingContext).parameters


def test_only_the_head_node_has_the_head_resource(main_app: App) -> None:
    alive = [n for n in ray.nodes() if n["Alive"]]
    heads = [n for n in alive if compat.HEAD_NODE_RESOURCE in n["Resources"]]
    assert len(heads) == 1  # what pins the task manager (and Serve's controller) there
    assert main_app.stats()["on_head_node"] is True
