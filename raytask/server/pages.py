"""The app's own pages: ``/``, ``/schema.json``, ``/openapi.json``, health, queue, metrics
and the dashboard (SPEC §2). They run no task command; :class:`~raytask.server.routes.Routes`
mounts them before the task routes, behind the same guard.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..core.config import AppConfig
from ..core.endpoint import SERVICE_ROUTES, Endpoint
from ..core.errors import EndpointNotFoundError, ServiceUnavailableError
from ..core.metrics import prometheus_text
from .auth import PUBLIC_ROUTES, Tokens
from .backend import Backend
from .dashboard import DASHBOARD, DASHBOARD_HEADERS
from .openapi import openapi_document


class Pages:
    """The handlers of the app's own pages.

    Args:
        endpoints: the app's endpoints, by name.
        backend: where the queue's numbers and readiness come from.
        config: app-wide settings.
        tokens: the app's API tokens (the OpenAPI document says whether it needs them).
    """

    def __init__(
        self, endpoints: dict[str, Endpoint], backend: Backend, config: AppConfig, tokens: Tokens
    ) -> None:
        self.endpoints, self.backend, self.config, self.tokens = endpoints, backend, config, tokens

    def _prefix(self, request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    async def schema(self, request: Request) -> Response:
        prefix = self._prefix(request)
        return JSONResponse(
            {
                "name": "raytask",
                "type": "service",
                "routes": [e.route_info(prefix) for e in self.endpoints.values()],
            }
        )

    async def openapi(self, request: Request) -> Response:
        document = openapi_document(
            list(self.endpoints.values()),
            self._prefix(request),
            self.config,
            secured=self.tokens.required,
        )
        return JSONResponse(document)

    async def readyz(self, request: Request) -> Response:
        if await self.backend.ready():
            return JSONResponse({"status": "ready"})
        raise ServiceUnavailableError("the task manager is not ready")

    async def queue(self, request: Request) -> Response:
        return JSONResponse(await self.backend.queue())

    async def metrics(self, request: Request) -> Response:
        return Response(
            prometheus_text(await self.backend.queue()), media_type="text/plain; version=0.0.4"
        )

    async def dashboard(self, request: Request) -> Response:
        """``GET /dashboard``: the live task dashboard (its data routes need the token)."""
        base = html.escape(f"{self._prefix(request)}/", quote=True)
        return HTMLResponse(DASHBOARD.page().replace("{{BASE}}", base), headers=DASHBOARD_HEADERS)

    async def dashboard_asset(self, request: Request) -> Response:
        asset = DASHBOARD.asset(request.path_params["asset"])
        if asset is None:
            raise EndpointNotFoundError(f"no dashboard file {request.path_params['asset'][:64]!r}")
        body, media_type = asset
        headers = {**DASHBOARD_HEADERS, "Cache-Control": "no-cache"}
        return Response(body, media_type=media_type, headers=headers)

    async def livez(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def index(self, request: Request) -> Response:
        """``GET /``: the app's endpoints and where to read more (HTML for a browser)."""
        prefix = self._prefix(request)
        links = {
            "dashboard": f"{prefix}/dashboard",
            "schema": f"{prefix}/schema.json",
            "openapi": f"{prefix}/openapi.json",
            "queue": f"{prefix}/queue",
            "metrics": f"{prefix}/metrics",
            "readyz": f"{prefix}/readyz",
        }
        endpoints = [
            {"name": e.name, "route": f"{prefix}/{e.name}", "is_task": e.is_task}
            for e in self.endpoints.values()
        ]
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"name": "raytask", "endpoints": endpoints, "links": links})
        items = "".join(
            f"<li><code>POST {html.escape(e['route'])}"
            f"{'/submit' if e['is_task'] else ''}</code></li>"
            for e in endpoints
        )
        anchors = " · ".join(
            f'<a href="{html.escape(url)}">{html.escape(name)}</a>' for name, url in links.items()
        )
        page = (
            "<!doctype html><meta charset=utf-8><title>raytask</title>"
            f"<h1>raytask</h1><p>{anchors}</p><h2>Endpoints</h2><ul>{items}</ul>"
        )
        return HTMLResponse(page)

    def routes(self, guarded: Callable[..., Any]) -> list[Route]:
        """Their routes, each behind ``guarded(handler, public)``."""
        service = {
            "schema.json": self.schema,
            "openapi.json": self.openapi,
            "docs.json": self.openapi,
            "readyz": self.readyz,
            "livez": self.livez,
            "healthz": self.livez,
            "queue": self.queue,
            "metrics": self.metrics,
            "dashboard": self.dashboard,
        }
        if service.keys() != SERVICE_ROUTES:  # endpoint names must not shadow these
            raise RuntimeError("raytask.core.endpoint.SERVICE_ROUTES is out of date")
        return [
            Route("/", guarded(self.index), methods=["GET"]),
            Route("/dashboard/{asset}", guarded(self.dashboard_asset, True), methods=["GET"]),
            *(
                Route(f"/{path}", guarded(h, path in PUBLIC_ROUTES), methods=["GET"])
                for path, h in service.items()
            ),
        ]
