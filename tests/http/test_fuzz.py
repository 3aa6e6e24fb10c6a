"""The fuzz tier: schemathesis drives every route of ``/openapi.json``, in process.

Each generated request, valid or deliberately invalid, goes through the real routes over
the in-process backend, and every one of schemathesis' checks runs on the answer: no
server error, only declared status codes, content types and headers, bodies that match
their schemas, invalid input rejected and valid input accepted. A route answering
something its document does not declare fails here, so the document stays complete.

The seed is fixed (``deterministic``) and the examples per operation are bounded, so the
tier takes well under a minute; ``RAYTASK_FUZZ_EXAMPLES`` raises the bound for a deeper
run by hand.
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated, Any, Literal

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import BaseModel, Field
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

import raytask
from raytask.core.config import AppConfig
from raytask.core.status import TaskStatus
from raytask.core.table import TaskTable
from raytask.core.webhooks import new_secret
from raytask.server.routes import Routes

from ..support import FakeClock
from .conftest import ServedBackend

EXAMPLES = int(os.environ.get("RAYTASK_FUZZ_EXAMPLES", "12"))


class Point(BaseModel):
    x: float
    y: float
    label: str = ""


class Shapes:
    """Endpoints with one of each kind of argument and result, and no side effects."""

    @raytask.task
    def scalars(
        self, n: int, x: float, s: str, flag: bool = False, note: str | None = None
    ) -> dict[str, Any]:
        return {"n": n, "x": x, "s": s, "flag": flag, "note": note}

    @raytask.task
    def containers(
        self, items: list[int], tags: dict[str, str] | None = None, pair: tuple[int, str] = (0, "")
    ) -> list[int]:
        return sorted(items)

    @raytask.task
    def shape(self, point: Point, mode: Literal["a", "b"] = "a") -> Point:
        return point

    @raytask.task
    def raw(self, size: Annotated[int, Field(ge=0, le=1024)] = 16) -> bytes:
        return bytes(size)

    @raytask.task
    def loose(self, **extra: Any) -> int:
        return len(extra)

    @raytask.task
    def fails(self, message: str = "no") -> str:
        raise ValueError(message)

    @raytask.api
    def reverse(self, text: str) -> str:
        return text[::-1]


# A webhook secret and private networks allowed: every webhook URL the document admits is
# then accepted, as a valid request must be (deliveries are the manager's, not tested here).
config = AppConfig(webhook_secret=new_secret(), webhook_allow_private_networks=True)
backend = ServedBackend(config, FakeClock(), model=Shapes)
backend.max_wait_s = 0.02  # long-polls of pending tasks end at once
app = Routes(list(backend.endpoints.values()), backend, config).asgi_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
schema.config.generation.update(
    modes=["positive", "negative"], max_examples=EXAMPLES, deterministic=True
)
calls = 0
seen: set[TaskStatus] = set()  # the statuses the stateful runs' tasks reached


def statuses(table: TaskTable) -> set[TaskStatus]:
    return {table.get(task_id).status for task_id in table.ids_in(TaskStatus)}


def server_errors_are_failures(ctx: Any, response: Any, case: schemathesis.Case) -> None:
    """Replaces schemathesis' ``not_a_server_error``, which fails on every 5xx: here a 500
    is the declared answer for a task or a call that failed (SPEC §2: get of a failed
    task is 500), so a 5xx must be one of raytask's declared failure bodies instead."""
    if response.status_code >= 500:
        body = response.json()
        assert body.get("code") in {"task_failed", "unavailable"}, response.text
        assert body["error"].startswith(("task ", "fails failed: ")), response.text


def validate(case: schemathesis.Case, response: Any, **kwargs: Any) -> None:
    """Every check of schemathesis, with the two exceptions raytask's contract makes."""
    excluded = [not_a_server_error]  # replaced by server_errors_are_failures
    if response.status_code == 400 and response.json().get("code") == "task_not_completed":
        # SPEC §2: get of a task that has not finished is 400 (BentoML's client needs a
        # 4xx there): a valid request's declared answer, which positive_data_acceptance
        # would take for a rejection.
        excluded.append(positive_data_acceptance)
    if response.status_code in (413, 414, 431):
        # Past a size limit (a long generated webhook_url, percent-encoded): a 4xx that
        # rejects the request, which negative_data_rejection only knows by other codes.
        excluded.append(negative_data_rejection)
    case.validate_response(
        response, excluded_checks=excluded, additional_checks=[server_errors_are_failures], **kwargs
    )


def known_task_id(generated: str) -> str:
    """Half the generated ids point at real tasks (pending ones first), so the routes
    answer more than 404."""
    if generated[:1] not in "01234567":
        return generated
    pending = backend.table.ids_in([TaskStatus.PENDING])
    ids = pending if pending and generated[:1] < "4" else backend.table.ids_in(TaskStatus)
    return sorted(ids)[int(generated, 16) % len(ids)] if ids else generated


@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,
)
def test_every_route_answers_what_its_document_declares(case: schemathesis.Case) -> None:
    global calls
    query = case.query or {}
    task_id = query.get("task_id")
    # A stream of a real task stays open until the task ends, which here it may never do:
    # the stream route gets the generated ids (its events are tests/http/test_streams.py's).
    streams = case.operation.path.endswith("/stream")
    if isinstance(task_id, str) and len(task_id) == 32 and not streams:
        query["task_id"] = known_task_id(task_id)
    seen.update(statuses(backend.table))  # before a delete_many may remove them
    validate(case, case.call())
    calls += 1
    if calls % 2 == 0:  # tasks stay pending for a while, then run
        asyncio.run(backend.drain(limit=1))


class TaskFlows(schema.as_state_machine()):  # type: ignore[misc]
    """Sequences along the document's links: submit, then status, get, cancel or retry of
    the id it answered, with tasks finishing between steps now and then."""

    def setup(self) -> None:
        # Each run starts from an empty table, so a replay of a run sees the same answers
        # (hypothesis re-runs a failing sequence; state left by other runs would change it).
        super().setup()
        self.steps = 0
        self.table, backend.table = backend.table, TaskTable(clock=FakeClock())

    def teardown(self) -> None:
        seen.update(statuses(backend.table))
        backend.table = self.table  # the stateless test's tasks, for the coverage check
        super().teardown()

    def after_call(self, response: Any, case: schemathesis.Case) -> None:
        global calls
        calls += 1
        self.steps += 1
        if self.steps % 3 == 0:
            asyncio.run(backend.drain(limit=1))

    def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
        validate(case, response)


TestTaskFlows = TaskFlows.TestCase
TestTaskFlows.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=6, deadline=None, derandomize=True
)


def test_the_fuzzer_reached_every_kind_of_answer() -> None:
    """The fuzz run above is not vacuous: tasks were queued, run, failed and cancelled."""
    if not calls:
        pytest.skip("runs after the fuzz test only")
    reached = seen | statuses(backend.table)
    assert {TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.CANCELLED} <= reached, reached


HOSTILE = [
    "\u00b2",  # superscript two: str.isdigit() says yes, int() says no
    "\u0663",  # Arabic-Indic three
    "\uff11",  # fullwidth one
    "1\u00b2",
    "\x00",
    "\n",
    "\x7f",
    "\u202e1",  # right-to-left override
    "9" * 400,
    "-" + "9" * 400,
    "1e999",
    "-0",
    "NaN",
    "0x10",
    " 1",
]


async def test_hostile_values_in_every_parameter_of_every_route_are_never_a_5xx() -> None:
    """Non-ASCII digits, control characters and huge numbers, in each query and header
    parameter of each operation the document declares (its other parameters left out)."""
    import httpx

    tried = 0
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://raytask") as client:
        document = (await client.get("/openapi.json")).json()
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                body = b"[{}]" if path.endswith("/submit_many") else b"{}"
                for parameter in operation.get("parameters", []):
                    where, name = parameter["in"], parameter["name"]
                    for value in HOSTILE:
                        if where == "header" and any(c in value for c in "\x00\n"):
                            continue  # not a header value any client can send
                        headers = {"content-type": "application/json"}
                        if where == "header":  # its bytes as UTF-8 (httpx sends ASCII text)
                            headers[name] = value.encode()  # type: ignore[assignment]
                        response = await client.request(
                            method.upper(),
                            path,
                            params={name: value} if where == "query" else None,
                            headers=headers,
                            content=body if method in ("post", "put") else None,
                        )
                        tried += 1
                        assert response.status_code < 500, (method, path, name, value)
                        assert response.status_code == 200 or "error" in response.json()
    assert tried > 300  # every route's parameters, not a few
