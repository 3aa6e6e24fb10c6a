"""Answers for requests that no route takes (SPEC §2), all JSON with a ``code``.

- a path no route has: 404 ``route_not_found``, listing the app's endpoints and the route
  prefixes of the other raytask apps on the same Serve instance (a caller who forgot an
  app's prefix is told where it is);
- a path that exists, with another method: 405 ``method_not_allowed`` with ``Allow``;
- a path that exists without its trailing slash: 307 to it, with a JSON body that says so.

Starlette's own answers for these are plain text (or an empty 307), so the app turns off
the router's slash redirect and answers every miss here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match

from ..core.errors import EndpointNotFoundError, MethodNotAllowedError, RouteNotFoundError
from .backend import Backend

Neighbour = tuple[str, str]
"""Another raytask app on the same Serve instance: ``(app name, route prefix)``."""


async def neighbours(backend: Backend) -> list[Neighbour]:
    """The other raytask apps on this Serve instance; none when they cannot be listed (they
    are a hint, never a reason to fail an answer)."""
    try:
        return await backend.apps()
    except Exception:
        return []


class Misses:
    """The answers for requests no route takes.

    Args:
        routes: the app's concrete routes (the ``{name}`` templates left out: a path only
            they match is a miss).
        endpoints: the app's endpoint names.
        neighbours: returns the other raytask apps on this Serve instance (see
            :func:`neighbours`).
    """

    def __init__(
        self,
        routes: list[BaseRoute],
        endpoints: list[str],
        neighbours: Callable[[], Awaitable[list[Neighbour]]],
    ) -> None:
        self.routes, self.endpoints, self.neighbours = routes, endpoints, neighbours

    async def where(self, request: Request) -> tuple[str, dict[str, Any]]:
        """What to tell a caller who missed: a sentence and the same as ``detail``."""
        prefix = request.scope.get("root_path", "").rstrip("/")
        endpoints = [f"{prefix}/{name}" for name in self.endpoints]
        apps = [{"app": name, "prefix": other} for name, other in await self.neighbours()]
        hint = f"this app's endpoints: {', '.join(endpoints) or 'none'}"
        if apps:
            listed = ", ".join(f"{a['prefix']} ({a['app']})" for a in apps)
            hint += f"; other raytask apps on this server: {listed}"
        hint += f"; the API is described at {prefix}/docs"
        return hint, {"endpoints": endpoints, "apps": apps, "docs": f"{prefix}/docs"}

    async def endpoint_not_found(
        self, request: Request, error: EndpointNotFoundError
    ) -> EndpointNotFoundError:
        """``error`` (an unknown endpoint name), with where the endpoints are."""
        hint, detail = await self.where(request)
        return type(error)(f"{error.message} ({hint})", detail)

    def _allowed(self, scope: dict[str, Any]) -> set[str]:
        allowed: set[str] = set()
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                allowed |= getattr(route, "methods", None) or set()
        return allowed

    async def answer(self, request: Request, exc: Exception) -> Response:
        """The app's handler for Starlette's 404 and 405."""
        method, path = request.method, request.url.path
        # Starlette's own 405 may come from a {name} template; only a concrete route counts.
        full = request.scope.get("path", "")
        allowed = self._allowed(request.scope)
        if allowed:
            return self._not_allowed(method, path, tuple(sorted(allowed)))
        local = full.removeprefix(request.scope.get("root_path", ""))
        if local.endswith("/") and local.strip("/"):
            stripped = {**request.scope, "path": full.rstrip("/")}
            if self._allowed(stripped):
                return _redirect(request, path.rstrip("/"))
        hint, detail = await self.where(request)
        error = RouteNotFoundError(f"no route {method} {path} ({hint})", detail)
        return JSONResponse(error.to_body(), status_code=404)

    @staticmethod
    def _not_allowed(method: str, path: str, allow: tuple[str, ...]) -> Response:
        error = MethodNotAllowedError(f"{path} takes {', '.join(allow)}, not {method}", allow=allow)
        return JSONResponse(error.to_body(), status_code=405, headers={"Allow": ", ".join(allow)})


def _redirect(request: Request, path: str) -> Response:
    location = path + (f"?{request.url.query}" if request.url.query else "")
    body = {
        "error": f"{request.url.path} has a trailing slash: the route is {path}",
        "code": "trailing_slash",
        "location": location,
    }
    return JSONResponse(body, status_code=307, headers={"Location": location})
