"""API tokens: who may use an app's routes, and (with token isolation) whose task is whose.

With no token configured the app is open, as before. With tokens, every route except the
health checks and the dashboard's page needs ``Authorization: Bearer <token>``. A token is
compared with every configured one in constant time (through SHA-256 digests of equal
length, without stopping at the first match), so timing says nothing about which
characters were right. Tokens never reach a log line or a task record: with
``token_isolation`` a task keeps only a digest of the token that submitted it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from ..core.errors import UnauthorizedError

PUBLIC_ROUTES = frozenset({"livez", "healthz", "readyz", "dashboard"})
"""Service routes that answer without a token: the health checks (load balancers and probes
call them) and the dashboard's page and files (which hold no data: the page asks for a token
and sends it with every request for data)."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class Tokens:
    """The app's API tokens.

    Args:
        tokens: the accepted tokens (empty: the app is open).
        isolation: whether each task belongs to the token that submitted it.
    """

    def __init__(self, tokens: Iterable[str], isolation: bool = False) -> None:
        self._digests = [_digest(token) for token in tokens]
        self.isolation = isolation and bool(self._digests)

    @property
    def required(self) -> bool:
        """Whether requests need a token."""
        return bool(self._digests)

    def check(self, authorization: list[str]) -> str | None:
        """Check a request's ``Authorization`` headers; return the owner its tasks get
        (a digest of its token, with isolation; else None).

        Raises:
            UnauthorizedError: a token is required and the request has none it knows.
        """
        if not self._digests:
            return None
        if len(authorization) != 1:
            raise UnauthorizedError(
                "this app needs an API token: send 'Authorization: Bearer <token>'"
            )
        scheme, _, token = authorization[0].partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthorizedError("send the API token as 'Authorization: Bearer <token>'")
        offered = _digest(token.strip())
        matched = False
        for digest in self._digests:  # no early exit: the time is the same either way
            matched |= hmac.compare_digest(offered, digest)
        if not matched:
            raise UnauthorizedError("the API token is not one of this app's")
        return offered.hex()[:32] if self.isolation else None
