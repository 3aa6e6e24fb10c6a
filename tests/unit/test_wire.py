"""The wire's one declaration (raytask.core.wire) against everything made from it.

The Starlette routes, the OpenAPI document, ``/schema.json``, the client protocol and the
backend interface must each agree with the operations table: change one of them (a path,
a method, a parameter, a backend signature) and a test here fails.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from starlette.routing import Route

from raytask.client.protocol import RemoteEndpoint, Submission, status_many, usage
from raytask.core.config import AppConfig, SubmitOptions
from raytask.core.endpoint import discover
from raytask.core.wire import (
    APP_OPERATIONS,
    CALL,
    OPERATIONS,
    OPTIONS,
    TASK_OPERATIONS,
    Operation,
    Param,
)
from raytask.server.backend import TASK_COMMANDS, Backend
from raytask.server.ingress import RayBackend
from raytask.server.manager import COMMANDS, TaskManager
from raytask.server.openapi import openapi_document
from raytask.server.routes import Routes
from raytask.server.service import TaskService
from tests.apps import Demo

ENDPOINTS = discover(Demo.func_or_class, "Demo")
TASK = next(e for e in ENDPOINTS if e.is_task)
SYNC = next(e for e in ENDPOINTS if not e.is_task)
OPTION_NAMES = set(SubmitOptions.model_fields)
TASK_ID = "a" * 32


def declared() -> set[tuple[str, str]]:
    """Every (path, method) the table declares for the demo app."""
    pairs = set()
    for e in ENDPOINTS:
        ops = [CALL, *TASK_OPERATIONS] if e.is_task else [CALL]
        pairs |= {(op.path_for(e.name), m) for op in ops for m in op.methods}
    templates = [*APP_OPERATIONS, *TASK_OPERATIONS, CALL]
    return pairs | {(op.path, m) for op in templates for m in op.methods}


def names(op: Operation) -> set[str]:
    return op.param_names() | (OPTION_NAMES if OPTIONS in op.params else set())


def test_the_starlette_routes_are_the_table() -> None:
    routes = Routes(ENDPOINTS, backend=None, config=AppConfig()).routes()  # type: ignore[arg-type]
    pages = {"/", "/dashboard/{asset}"} | {f"/{name}" for name in _page_names()}
    served = {
        (r.path, m)
        for r in routes
        if isinstance(r, Route) and r.path not in pages
        for m in (r.methods or ()) - {"HEAD"}
    }
    assert served == declared()


def _page_names() -> set[str]:
    from raytask.core.endpoint import SERVICE_ROUTES

    return set(SERVICE_ROUTES)


def test_the_openapi_document_is_the_table() -> None:
    document = openapi_document(ENDPOINTS, config=AppConfig())
    paths = document["paths"]
    concrete = {(p, m) for p, m in declared() if "{name}" not in p}
    for path, method in concrete:
        assert method.lower() in paths[path], (path, method)
    for e in ENDPOINTS:
        ops = [CALL, *TASK_OPERATIONS] if e.is_task else [CALL]
        for op in ops:
            for method in op.methods:
                operation = paths[op.path_for(e.name)][method.lower()]
                assert {p["name"] for p in operation.get("parameters", [])} == names(op), op.name
                assert ("requestBody" in operation) == (op.body is not None), op.name
                for error in op.errors:
                    assert str(error.status_code) in operation["responses"], (op.name, error)
    for op in APP_OPERATIONS:
        operation = paths[op.path][op.methods[0].lower()]
        assert {p["name"] for p in operation.get("parameters", [])} == names(op)
    pages = {f"/{name}" for name in _page_names()} | {"/", "/dashboard/{asset}"}
    assert set(paths) - pages == {p for p, _ in concrete}


def test_schema_json_routes_are_the_prefix_of_each_endpoints_operations() -> None:
    for e in ENDPOINTS:
        route = e.route_info("/demo")["route"]
        assert route == CALL.path_for(e.name, "/demo")
        for op in TASK_OPERATIONS:
            assert op.path_for(e.name, "/demo") == route + op.path.removeprefix("/{name}")


def client_requests() -> list[tuple[str, Any]]:
    remote = RemoteEndpoint.from_route(TASK.route_info(""))
    settings = Submission.of("key-1", priority=3, ttl_s=60)
    return [
        ("call", remote.call({})),
        ("submit", remote.submit({}, settings)),
        ("submit_many", remote.submit_many([{}], Submission.of(priority=1))),
        ("list", remote.list(["pending"], 10, "5")),
        ("cancel_many", remote.cancel_many([TASK_ID], None)),
        ("cancel_many", remote.cancel_many(None, "pending")),
        ("delete_many", remote.delete_many([TASK_ID], None, None)),
        ("delete_many", remote.delete_many(None, "failure", 60.0)),
        ("status", remote.status(TASK_ID, 5)),
        ("get", remote.get(TASK_ID, 5)),
        ("stream", remote.stream(TASK_ID, 3)),
        ("cancel", remote.cancel(TASK_ID)),
        ("retry", remote.retry(TASK_ID)),
        ("status_many", status_many([TASK_ID])),
        ("usage", usage("alice", "e", "2026-12-01T00:00:00Z", None, ["tenant", "hour"])),
    ]


@pytest.mark.parametrize(("name", "request_"), client_requests())
def test_the_client_protocol_sends_what_the_table_declares(name: str, request_: Any) -> None:
    op = OPERATIONS[name]
    assert request_.method in op.methods
    assert request_.path == op.path_for(None if not op.per_endpoint else TASK.name)
    assert set(request_.params or {}) <= names(op)
    headers = {
        h for p in op.params if isinstance(p, Param) and p.where == "header" for h in [p.name]
    }
    assert set(request_.headers or {}) <= headers
    if isinstance(op.body, type):
        op.body.model_validate(request_.json)  # the body the route parses
    assert (request_.json is not None) == (op.body is not None)


def test_every_operation_is_sent_by_the_client() -> None:
    # The app-wide listing is the dashboard's (and curl's): the clients list per endpoint.
    assert {name for name, _ in client_requests()} == set(OPERATIONS) - {"list_tasks"}


def _signature(cls: type, name: str) -> list[tuple[str, Any, Any]]:
    parameters = inspect.signature(getattr(cls, name)).parameters.values()
    # ray.remote(TaskManager), once a test made the actor, adds its tracing parameter.
    return [(p.name, p.kind, p.default) for p in parameters if p.name != "_ray_trace_ctx"]


def test_the_backend_interface_is_the_services_commands() -> None:
    commands = {op.command for op in OPERATIONS.values()} - {"call"}
    assert commands <= set(TASK_COMMANDS)
    for name in TASK_COMMANDS:
        expected = _signature(TaskService, name)
        assert _signature(Backend, name) == expected, name  # type: ignore[type-abstract]
        assert _signature(RayBackend, name) == expected, name


def test_the_actor_serves_every_command_the_ray_backend_calls() -> None:
    source = inspect.getsource(RayBackend)
    called = {name for name in dir(TaskManager) if f"manager.{name}.remote" in source}
    assert called <= set(COMMANDS) | {"result", "ping"}
    for name in COMMANDS:  # as the service has it: Ray checks the arguments against it
        assert _signature(TaskManager, name) == _signature(TaskService, name), name
        assert inspect.iscoroutinefunction(getattr(TaskManager, name))
    assert {"submit_each", "submit_many", "status_many", "cancel_many", "delete_many"} <= called
