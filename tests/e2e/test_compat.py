"""Contract tests: one per Ray / Ray Serve internal that raytask.server.compat relies on.

Each runs the real internal on the session's real Ray, the way raytask uses it, so a Ray
upgrade that renames or changes one fails here, by name, instead of in production.
"""

from __future__ import annotations

import inspect

import pytest
import ray
from ray import serve

from raytask.server import compat
from raytask.server.batch import BATCH_METHOD, FOLLOWS, VALUE, BatchItem, Ended, Outcomes
from tests.apps import Demo

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


def _batch_handle(app: App) -> serve.handle.DeploymentHandle:
    return serve.get_deployment_handle("Demo", app_name=app.name).options(
        method_name=BATCH_METHOD, stream=True
    )


async def test_assigned_stream_gives_the_owned_refs_of_the_items(main_app: App) -> None:
    items = [BatchItem("t", 1, "wordcount", {"text": "a b a"})]
    response = _batch_handle(main_app).remote(None, 1, items, 4)
    stream = await compat.assigned_stream(response)
    assert isinstance(stream, ray.ObjectRefGenerator)
    refs = [ref async for ref in stream]
    assert all(isinstance(ref, ray.ObjectRef) for ref in refs)
    (outcomes,) = [await ref for ref in refs]
    assert outcomes == Outcomes([Ended("t", 1, VALUE, {"words": 3, "top": ["a", "b"]})])


async def test_next_unfetched_returns_a_large_item_without_reading_it(main_app: App) -> None:
    items = [BatchItem("t", 1, "blob", {"size_mb": 1})]
    stream = await compat.assigned_stream(_batch_handle(main_app).remote(None, 1, items, 4))
    header = await compat.next_unfetched(stream)
    assert header is not None and (await header).ended == [Ended("t", 1, FOLLOWS, None)]
    value = await compat.next_unfetched(stream)
    assert value is not None and list(compat.stored_sizes([value])) == [value]
    assert compat.stored_sizes([value])[value] >= 2**20  # its size, for max_task_bytes
    assert await compat.next_unfetched(stream) is None  # the end
    assert len(await value) == 2**20


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


async def test_stored_sizes_tells_results_from_small_values(main_app: App) -> None:
    items = [BatchItem("large", 1, "blob", {"size_mb": 0.2})]
    items.append(BatchItem("failed", 1, "fail", {"message": "x" * 9000}))
    stream = await compat.assigned_stream(_batch_handle(main_app).remote(None, 1, items, 4))
    refs = []
    while (ref := await compat.next_unfetched(stream)) is not None:
        refs.append(ref)
    large = next(r for r in refs if r in compat.stored_sizes([r]))
    assert len(await large) == int(0.2 * 2**20)
    outcomes = [await r for r in refs if r is not large]
    (failed,) = [e for o in outcomes for e in o.ended if e[0] == "failed"]
    # the largest failure the runner returns stays small enough to be inlined
    assert compat.INLINE_BYTES > len(failed[3].encode()) > 8000


def test_autoscaling_context_has_total_num_requests() -> None:
    from ray.serve.config import AutoscalingContext

    assert "total_num_requests" in inspect.signature(AutoscalingContext).parameters


def test_running_replicas_agree_with_serve_status(main_app: App) -> None:
    status = serve.status().applications[main_app.name].deployments
    expected = {name: d.replica_states.get("RUNNING", 0) for name, d in status.items()}
    assert compat.running_replicas(main_app.name) == expected
    assert expected["Demo"] >= 1 and "RaytaskIngress" in expected
    assert compat.running_replicas("no-such-app") == {}


def test_only_the_head_node_has_the_head_resource(main_app: App) -> None:
    alive = [n for n in ray.nodes() if n["Alive"]]
    heads = [n for n in alive if compat.HEAD_NODE_RESOURCE in n["Resources"]]
    assert len(heads) == 1  # what pins the task manager (and Serve's controller) there
    assert main_app.stats()["on_head_node"] is True


def test_saved_settings_round_trip_in_the_gcs_and_a_driver_is_no_actor() -> None:
    saved = compat.SavedSettings("compat-test-app")
    assert saved.load() is None
    saved.save(([1, 2], {"max_in_flight": 3}, [("Demo", Demo.func_or_class)]))
    assert compat.SavedSettings("compat-test-app").load() == (
        [1, 2],
        {"max_in_flight": 3},
        [("Demo", Demo.func_or_class)],
    )
    assert compat.in_actor() is False  # this driver: the manager alone saves and restores
