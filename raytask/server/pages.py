"""The app's own pages: ``/``, ``/schema.json``, ``/openapi.json``, health, queue, metrics
and the dashboard (SPEC §2). They run no task command; :class:`~raytask.server.routes.Routes`
mounts them before the task routes, behind the same guard.
"""

from __future__ import annotations

import html
import inspect
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..core.config import AppConfig
from ..core.endpoint import SERVICE_ROUTES, Endpoint
from ..core.errors import ForbiddenError, RouteNotFoundError, ServiceUnavailableError
from ..core.metrics import prometheus_text
from .auth import PUBLIC_ROUTES, Tokens, caller_of
from .backend import Backend
from .dashboard import DASHBOARD, DASHBOARD_HEADERS
from .docs import DOCS_HEADERS, docs_page, type_of
from .misses import neighbours
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

    @staticmethod
    def _admin_only(request: Request) -> None:
        if not caller_of(request).admin:
            raise ForbiddenError(
                "with token_isolation, only admin_tokens read the app-wide numbers; "
                "GET /usage answers with this token's own"
            )

    async def queue(self, request: Request) -> Response:
        self._admin_only(request)
        return JSONResponse(await self.backend.queue())

    async def metrics(self, request: Request) -> Response:
        self._admin_only(request)
        return Response(
            prometheus_text(await self.backend.queue()), media_type="text/plain; version=0.0.4"
        )

    async def dashboard(self, request: Request) -> Response:
        """``GET /dashboard``: the live task dashboard (its data routes need the token)."""
        prefix = self._prefix(request)
        base = html.escape(f"{prefix}/", quote=True)
        links = " · ".join(
            f'<a href="{html.escape(url, quote=True)}">{html.escape(name)}</a>'
            for name, url in (await self._links(prefix)).items()
            if name != "dashboard"
        )
        page = DASHBOARD.page().replace("{{BASE}}", base).replace("{{LINKS}}", links)
        return HTMLResponse(page, headers=DASHBOARD_HEADERS)

    async def dashboard_asset(self, request: Request) -> Response:
        asset = DASHBOARD.asset(request.path_params["asset"])
        if asset is None:
            raise RouteNotFoundError(f"no dashboard file {request.path_params['asset'][:64]!r}")
        body, media_type = asset
        headers = {**DASHBOARD_HEADERS, "Cache-Control": "no-cache"}
        return Response(body, media_type=media_type, headers=headers)

    async def docs(self, request: Request) -> Response:
        """``GET /docs``: the API page, from the same document as ``/openapi.json``."""
        prefix = self._prefix(request)
        document = openapi_document(
            list(self.endpoints.values()), prefix, self.config, secured=self.tokens.required
        )
        page = docs_page(document, await self._links(prefix), self.tokens.required)
        return HTMLResponse(page, headers=DOCS_HEADERS)

    async def _links(self, prefix: str) -> dict[str, str]:
        """This app's pages, and the other raytask apps' docs and dashboards."""
        links = {
            "home": f"{prefix}/",
            "dashboard": f"{prefix}/dashboard",
            "docs": f"{prefix}/docs",
            "openapi": f"{prefix}/openapi.json",
        }
        for name, other in await neighbours(self.backend):
            base = other.rstrip("/")
            links[f"{name}: docs"] = f"{base}/docs"
            links[f"{name}: dashboard"] = f"{base}/dashboard"
        return links

    async def livez(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def index(self, request: Request) -> Response:
        """``GET /``: each endpoint with its arguments and docstring, and links to this
        app's pages and to the other raytask apps (HTML for a browser)."""
        prefix = self._prefix(request)
        links = await self._links(prefix)
        links |= {name: f"{prefix}/{name}" for name in ("schema.json", "queue", "metrics")}
        endpoints = []
        for e in self.endpoints.values():
            schema = e.input_schema()
            required = set(schema.get("required") or ())
            params = {
                name: {
                    "type": type_of(field),
                    **({} if name in required else {"default": field.get("default")}),
                }
                for name, field in (schema.get("properties") or {}).items()
            }
            route = f"{prefix}/{e.name}"
            endpoints.append(
                {
                    "name": e.name,
                    "route": route,
                    "submit": f"{route}/submit" if e.is_task else None,
                    "is_task": e.is_task,
                    "params": params,
                    "doc": inspect.getdoc(e.func) or "",
                }
            )
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"name": "raytask", "endpoints": endpoints, "links": links})
        return HTMLResponse(_index_page(endpoints, links))

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
            "docs": self.docs,
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


def _index_page(endpoints: list[dict[str, Any]], links: dict[str, str]) -> str:
    items = []
    for e in endpoints:
        params = ", ".join(f"{name}: {field['type']}" for name, field in e["params"].items())
        summary = e["doc"].splitlines()[0] if e["doc"] else ""
        items.append(
            f"<li><code>POST {html.escape(e['submit'] or e['route'])}</code> "
            f"({html.escape(params)})<br><span>{html.escape(summary)}</span></li>"
        )
    anchors = " · ".join(
        f'<a href="{html.escape(url)}">{html.escape(name)}</a>' for name, url in links.items()
    )
    return (
        "<!doctype html><meta charset=utf-8><title>raytask</title>"
        f"<h1>raytask</h1><p>{anchors}</p><h2>Endpoints</h2><ul>{''.join(items)}</ul>"
    )
