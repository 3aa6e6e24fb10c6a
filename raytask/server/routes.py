"""The HTTP routes of a raytask app, as a Starlette application over a backend.

The routes parse and validate requests (the task-control parameters with
:mod:`raytask.server.params`), call a :class:`~raytask.server.backend.Backend` and format
the answers of SPEC §2 and §7; they know nothing of Ray. The ingress deployment gives them a
backend that talks to the task manager actor; the HTTP test tier gives them an in-process
one.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from typing import Any

from pydantic import BaseModel
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core import bodies
from ..core.config import AppConfig, SubmitOptions
from ..core.endpoint import Endpoint, encode_result
from ..core.errors import (
    EndpointNotFoundError,
    ForbiddenError,
    HTTPError,
    MalformedRequestError,
    QueueFullError,
    ResultEncodingError,
    ServiceUnavailableError,
    TaskFailedError,
    TaskNotCompletedError,
    UnauthorizedError,
)
from ..core.messages import Submit
from ..core.state import ANY_CASE_TASK_ID_PATTERN, TaskState
from ..core.status import BENTOML_SPELLING, TaskStatus
from ..core.wire import (
    APP_OPERATIONS,
    ATTEMPT_HEADER,
    CALL,
    IDEMPOTENCY_KEY,
    MAX_WAIT_S,
    TASK_OPERATIONS,
    Operation,
)
from .auth import CALLER, Tokens, caller_of
from .backend import Backend
from .events import PING_S, Reads, call_events
from .guard import middleware
from .misses import Misses, neighbours
from .pages import Pages
from .params import (
    ListQuery,
    check_limits,
    idempotency_key,
    item_error,
    parse_body,
    read_body,
    stream_attempt,
    stream_start,
    submit_options,
    usage_query,
    wait_s_of,
)
from .v1 import V1Routes

_TASK_ID = re.compile(ANY_CASE_TASK_ID_PATTERN)
_ANSWERED_ID = re.compile(rb'^\{"task_id":"([0-9a-f]{32})"')
BENTOML_USER_AGENT = "BentoML HTTP Client"
logger = logging.getLogger("ray.serve.raytask.routes")
# A child of Serve's logger, so its lines land where Serve's access lines would.
access_logger = logging.getLogger("ray.serve.raytask.access")


def error_response(error: HTTPError) -> JSONResponse:
    """The JSON response for a raytask error (with ``Retry-After`` for 429 and 503, and
    ``WWW-Authenticate`` for 401)."""
    headers = {}
    if isinstance(error, QueueFullError | ServiceUnavailableError):
        headers["Retry-After"] = str(max(1, round(error.retry_after_s)))
    if isinstance(error, UnauthorizedError):
        headers["WWW-Authenticate"] = 'Bearer realm="raytask"'

    return JSONResponse(error.to_body(), status_code=error.status_code, headers=headers)


class Routes:
    """The route handlers of one app.

    Args:
        endpoints: the app's endpoints.
        backend: where tasks go.
        config: app-wide settings (body size limit).
    """

    def __init__(self, endpoints: list[Endpoint], backend: Backend, config: AppConfig) -> None:
        self.endpoints = {e.name: e for e in endpoints}
        self.backend = backend
        self.config = config
        self.tokens = Tokens(config.named_api_tokens(), config.token_isolation, config.admin_tokens)
        self.pages = Pages(self.endpoints, backend, config, self.tokens)
        jobs = getattr(backend, "jobs", None)  # batch jobs (SPEC 11), where the backend has them
        self.v1 = None if jobs is None else V1Routes(jobs, config, self._guarded)
        self._fixed = self._concrete()  # built once: the routes and the misses share them
        self.misses = Misses(self._fixed, list(self.endpoints), lambda: neighbours(backend))

    # -- access ------------------------------------------------------------------

    @staticmethod
    def _owner(request: Request) -> str | None:
        return caller_of(request).owner

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def _log_access(request: Request, response: Response, seconds: float) -> None:
        task_id = request.query_params.get("task_id")
        if task_id is not None and not _TASK_ID.fullmatch(task_id):
            task_id = None  # a caller's text never reaches the log (no forged lines)
        task_id = task_id and task_id.lower()
        if task_id is None and response.media_type == "application/json":
            # a submit or retry: the id is in the answer
            match = _ANSWERED_ID.search(bytes(response.body[:80]))
            task_id = match.group(1).decode() if match else None
        access_logger.info(
            "%s %s %d%s %.1fms",
            request.method,
            request.url.path,
            response.status_code,
            f" task={task_id}" if task_id else "",
            seconds * 1e3,
        )

    def _endpoint(self, request: Request, task_only: bool = False) -> Endpoint:
        name = request.path_params["name"]
        endpoint = self.endpoints.get(name)
        if endpoint is None or (task_only and not endpoint.is_task):
            kind = "task endpoint" if task_only and endpoint else "endpoint"
            raise EndpointNotFoundError(f"no {kind} named {name!r}")
        return endpoint

    async def _body(self, request: Request) -> bytes:
        return await read_body(request, self.config.max_request_bytes)

    @staticmethod
    def _task_id(request: Request) -> str:
        task_id = request.query_params.get("task_id")
        if not task_id:
            raise MalformedRequestError("missing query parameter task_id")
        if not _TASK_ID.fullmatch(task_id):
            raise MalformedRequestError(
                f"malformed task_id {task_id[:64]!r}: expected 32 hex digits"
            )
        return task_id.lower()

    def _submit_options(self, request: Request) -> SubmitOptions:
        return submit_options(request, self.config)

    @staticmethod
    def _bentoml(request: Request) -> bool:
        return request.headers.get("user-agent", "").startswith(BENTOML_USER_AGENT)

    def _view(self, request: Request, state: TaskState) -> dict[str, Any]:
        """A status answer for the wire, in the caller's status spelling."""
        return state.wire(bentoml=self._bentoml(request))

    def _answer(self, request: Request, answer: BaseModel) -> Response:
        """A typed answer for the wire; its tasks' statuses in the caller's spelling."""
        body = answer.model_dump(mode="json")
        if self._bentoml(request):
            for task in body.get("tasks", ()):
                if "status" in task:
                    task["status"] = BENTOML_SPELLING[TaskStatus(task["status"])]
        return JSONResponse(body)

    @staticmethod
    def _result_response(value: Any) -> Response:
        try:
            body, media_type = encode_result(value)
        except ResultEncodingError as exc:  # replicas check first; this is the backstop
            raise TaskFailedError(str(exc)) from None
        return Response(body, media_type=media_type)

    # -- task routes -----------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        endpoint = self._endpoint(request, task_only=True)
        options = self._submit_options(request)
        key = idempotency_key(request)
        kwargs = endpoint.validate_json(await self._body(request))
        caller = caller_of(request)
        item = Submit(endpoint.name, kwargs, options, key, caller.owner, caller.tenant)
        state = await self.backend.submit(item)
        return JSONResponse(self._view(request, state))

    async def submit_many(self, request: Request) -> Response:
        endpoint = self._endpoint(request, task_only=True)
        options = self._submit_options(request)
        if IDEMPOTENCY_KEY in request.headers:
            raise MalformedRequestError(
                f"{IDEMPOTENCY_KEY} is for submit, one task per key; submit_many takes none"
            )
        inputs = endpoint.validate_json_many(await self._body(request))
        caller = caller_of(request)
        states = await self.backend.submit_many(
            endpoint.name, inputs, options, caller.owner, caller.tenant
        )
        answer = bodies.SubmitManyAnswer(
            tasks=[bodies.Queued(task_id=s.task_id, status=s.status) for s in states]
        )
        return self._answer(request, answer)

    async def list_tasks(self, request: Request) -> Response:
        name = request.path_params.get("name")
        if name is not None:
            endpoint: str | None = self._endpoint(request, task_only=True).name
        else:
            endpoint = request.query_params.get("endpoint")
            if endpoint is not None and endpoint not in self._task_endpoints():
                raise EndpointNotFoundError(f"no task endpoint named {endpoint!r}")
        query = ListQuery.parse(request)
        states, cursor = await self.backend.list_tasks(
            endpoint, query.statuses, query.limit, query.cursor, self._owner(request)
        )
        next_cursor = None if cursor is None else str(cursor)
        return self._answer(request, bodies.TaskPage(tasks=states, next_cursor=next_cursor))

    async def status_many(self, request: Request) -> Response:
        body = parse_body(bodies.StatusManyRequest, await self._body(request), "status_many")
        wellformed = [t.lower() for t in body.task_ids if _TASK_ID.fullmatch(t)]
        owner = self._owner(request)
        answers = iter(await self.backend.status_many(wellformed, owner) if wellformed else [])
        tasks: list[TaskState | bodies.ItemError] = []
        for task_id in body.task_ids:
            answer: TaskState | HTTPError
            if not _TASK_ID.fullmatch(task_id):
                answer = MalformedRequestError(
                    f"malformed task_id {task_id[:64]!r}: expected 32 hex digits"
                )
            else:
                answer = next(answers)
            tasks.append(item_error(task_id, answer) if isinstance(answer, HTTPError) else answer)
        return self._answer(request, bodies.StatusManyAnswer(tasks=tasks))

    async def cancel_many(self, request: Request) -> Response:
        endpoint = self._endpoint(request, task_only=True)
        body = parse_body(
            bodies.CancelManyRequest, await self._body(request), f"{endpoint.name}/cancel_many"
        )
        task_ids = body.task_ids
        if task_ids is not None:
            task_ids = [t.lower() for t in task_ids if _TASK_ID.fullmatch(t)]  # unknown: skipped
        statuses = None if body.status is None else [body.status]
        cancelled = await self.backend.cancel_many(
            endpoint.name, task_ids, statuses, self._owner(request)
        )
        return self._answer(request, bodies.CancelManyAnswer(cancelled=cancelled))

    async def delete_many(self, request: Request) -> Response:
        endpoint = self._endpoint(request, task_only=True)
        body = parse_body(
            bodies.DeleteManyRequest, await self._body(request), f"{endpoint.name}/delete_many"
        )
        task_ids = body.task_ids
        malformed = 0
        if task_ids is not None:
            wellformed = [t.lower() for t in task_ids if _TASK_ID.fullmatch(t)]
            malformed, task_ids = len(task_ids) - len(wellformed), wellformed
        deleted, skipped = await self.backend.delete_many(
            endpoint.name, task_ids, body.status, body.older_than_s, self._owner(request)
        )
        answer = bodies.DeleteManyAnswer(deleted=deleted, skipped=skipped + malformed)
        return self._answer(request, answer)

    def _task_endpoints(self) -> list[str]:
        return [e.name for e in self.endpoints.values() if e.is_task]

    async def status(self, request: Request) -> Response:
        name = self._endpoint(request, task_only=True).name
        task_id = self._task_id(request)
        wait_s, owner = wait_s_of(request), self._owner(request)
        if wait_s:
            state = await self.backend.wait(task_id, wait_s, owner, name)
        else:
            state = await self.backend.status(task_id, owner, name)
        return JSONResponse(self._view(request, state))

    async def get(self, request: Request) -> Response:
        name = self._endpoint(request, task_only=True).name
        task_id = self._task_id(request)
        wait_s, owner = wait_s_of(request), self._owner(request)
        try:
            value = await self.backend.result(task_id, owner, name, wait_s)
        except TaskNotCompletedError as exc:  # an HTTP caller waits with a query parameter
            raise TaskNotCompletedError(
                f"{exc.message}; add &wait_s=S to wait up to S s (at most {MAX_WAIT_S:g}) "
                f"for it: GET {request.url.path}?task_id={task_id}&wait_s=30"
            ) from None
        return self._result_response(value)

    async def stream(self, request: Request) -> Response:
        """``GET /NAME/stream``: the task's chunks as Server-Sent Events, then ``done``."""
        name = self._endpoint(request, task_only=True).name
        task_id = self._task_id(request)
        start, attempt = stream_start(request), stream_attempt(request)
        owner = self._owner(request)
        first = await self.backend.stream(task_id, start, attempt, 0.0, owner, name)  # 404s: JSON
        # The attempt the reader is in (its first chunks', or the one a pending task
        # runs next): a client resumes with it, and gets a reset if another runs by then.
        pending = first.state.status is TaskStatus.PENDING
        attempt = attempt or first.attempt or (first.state.attempts + 1 if pending else 0)
        reads = Reads(self.backend, task_id, owner, name, self._bentoml(request))
        return EventSourceResponse(
            reads.events(first, attempt or None),
            ping=PING_S,
            headers={ATTEMPT_HEADER: str(attempt)},
        )

    async def cancel(self, request: Request) -> Response:
        name = self._endpoint(request, task_only=True).name
        task_id = self._task_id(request)
        state = await self.backend.cancel(task_id, self._owner(request), name)
        return JSONResponse(self._view(request, state))

    async def retry(self, request: Request) -> Response:
        name = self._endpoint(request, task_only=True).name
        task_id = self._task_id(request)
        state = await self.backend.retry(task_id, self._owner(request), name)
        return JSONResponse(self._view(request, state))

    async def usage(self, request: Request) -> Response:
        """``GET /usage``: with isolation a tenant's token reads its own usage only."""
        query, caller = usage_query(request), caller_of(request)
        if not caller.admin:
            if query.tenant not in (None, caller.tenant):
                raise ForbiddenError("this token reads its own tenant's usage only")
            query = dataclasses.replace(query, tenant=caller.tenant)
        rows = await self.backend.usage(query)
        return self._answer(request, bodies.UsageAnswer.model_validate({"usage": rows}))

    async def call(self, request: Request) -> Response:
        if request.path_params["name"] not in self.endpoints:  # POST /readyz, POST /nope
            raise StarletteHTTPException(404)  # Misses: 405 for a page's path, else 404
        endpoint = self._endpoint(request)
        kwargs = endpoint.validate_json(await self._body(request))
        if endpoint.streams and "text/event-stream" in request.headers.get("accept", ""):
            chunks = self.backend.call_stream(endpoint.name, kwargs)
            return EventSourceResponse(call_events(chunks), ping=PING_S)
        return self._result_response(await self.backend.call(endpoint.name, kwargs))

    # -- wiring ----------------------------------------------------------------

    def _guarded(self, handler: Any, public: bool = False) -> Any:
        """``handler`` behind the URL and header limits, the token check (unless
        ``public``), the error mapping (every raytask error a JSON answer) and the
        access log."""

        async def answer(request: Request) -> Response:
            try:
                check_limits(request, self.config)
                if not public:
                    caller = self.tokens.check(request.headers.getlist("authorization"))
                    request.scope[CALLER] = caller
                return await handler(request)
            except HTTPError as exc:
                if type(exc) is EndpointNotFoundError:  # an unknown name: say where they are
                    exc = await self.misses.endpoint_not_found(request, exc)
                return error_response(exc)
            except StarletteHTTPException:
                raise  # answered as JSON by the app's handler (see _http_error)
            except Exception as exc:  # a bug: still a JSON answer, and a logged trace
                logger.exception("raytask route %s failed", request.url.path)
                return error_response(
                    HTTPError(f"internal error ({type(exc).__name__}); see the logs")
                )

        if not self.config.access_log:
            return answer

        async def logged(request: Request) -> Response:
            start = time.perf_counter()
            response = await answer(request)
            self._log_access(request, response, time.perf_counter() - start)
            return response

        return logged

    def _route(self, op: Operation, endpoint: str | None = None) -> Route:
        """The route of one operation of the wire (of ``endpoint``, if given)."""
        handler = getattr(self, op.handler)
        if endpoint is not None:  # its own path, so Serve's access lines name the endpoint
            handler = _named(handler, endpoint)
        return Route(op.path_for(endpoint), self._guarded(handler), methods=list(op.methods))

    def _concrete(self) -> list[Route]:
        """The routes with a fixed path: each endpoint's ``submit``, ``status`` and ``get``
        first, then the app's pages, the app-wide operations and the rest of each
        endpoint's operations.

        Starlette, and Serve again for its metrics' route name, find a request's route by
        trying each in turn: with 19 endpoints, a submit, status or get tried 90-290 µs
        of routes before this order (about a fifth of the ingress's CPU per request). No
        two of these paths match one request (endpoint names cannot be the pages'), so
        the order changes only that cost.
        """
        tasks = [e.name for e in self.endpoints.values() if e.is_task]
        hot = [op for op in TASK_OPERATIONS if op.name in HOT_OPERATIONS]
        concrete = [self._route(op, name) for op in hot for name in tasks]
        concrete += [*self.pages.routes(self._guarded), *map(self._route, APP_OPERATIONS)]
        concrete += [] if self.v1 is None else self.v1.routes()
        for e in self.endpoints.values():
            concrete.append(self._route(CALL, e.name))
            if e.is_task:
                concrete += [self._route(op, e.name) for op in TASK_OPERATIONS if op not in hot]
        return concrete

    def routes(self) -> list[Route]:
        """Every route: the concrete ones, then the templates that answer unknown names."""
        return [*self._fixed, *map(self._route, TASK_OPERATIONS), self._route(CALL)]

    def asgi_app(self) -> Starlette:
        """The Starlette application serving every route of the wire; a request none
        takes gets :class:`~raytask.server.misses.Misses`' JSON answer."""
        app = Starlette(
            routes=self.routes(),
            exception_handlers={StarletteHTTPException: self.misses.answer},
            middleware=middleware(self.config.cors_allow_origins),
        )
        app.router.redirect_slashes = False  # Misses answers with JSON instead
        return app


HOT_OPERATIONS = ("submit", "status", "get")
"""The operations most requests are: their routes are tried first."""


def _named(handler: Any, name: str) -> Any:
    async def endpoint(request: Request) -> Response:
        request.scope["path_params"] = {"name": name}
        return await handler(request)

    return endpoint
