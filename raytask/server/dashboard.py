"""The files of ``GET /dashboard``, shipped in the package (no CDN, no build step).

The page (``static/index.html``) and its files are read once; the page's ``<base>``
is set per request to the app's route prefix, so the page and every request it makes work
under any prefix, and offline.
"""

from __future__ import annotations

import functools
from importlib import resources

DASHBOARD_HEADERS = {
    "Content-Security-Policy": "default-src 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
"""Headers of the page and its files (SPEC §9): only its own scripts and styles run, no
other site may frame it, and no browser guesses a file's type."""

_MEDIA_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",  # its own icon: a data: URL would break the CSP
}


class _Dashboard:
    @functools.cached_property
    def _files(self) -> dict[str, bytes]:
        folder = resources.files("raytask.server.static")
        return {name: (folder / name).read_bytes() for name in ("index.html", *_MEDIA_TYPES)}

    def page(self) -> str:
        """The HTML page, with ``{{BASE}}`` where the prefix goes."""
        return self._files["index.html"].decode()

    def asset(self, name: str) -> tuple[bytes, str] | None:
        """A file of the page and its media type, or None."""
        if name not in _MEDIA_TYPES:
            return None
        return self._files[name], _MEDIA_TYPES[name]


DASHBOARD = _Dashboard()
