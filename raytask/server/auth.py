"""API tokens: who may use an app's routes, and (with token isolation) whose task is whose.

With no token configured the app is open, as before. With tokens, every route except the
health checks and the dashboard's page needs ``Authorization: Bearer <token>``. A token is
compared with every configured one in constant time (through SHA-256 digests of equal
length, without stopping at the first match), so timing says nothing about which
characters were right. Tokens never reach a log line or a task record: with
``token_isolation`` a task keeps only a digest of the token that submitted it.

Each token names a tenant (:mod:`raytask.core.tokens`): a task records its tenant's name,
which the fair queue, the quotas and the usage accounting go by. With isolation a tenant's
token sees only its own tasks and usage; ``admin_tokens`` see everything.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import UnauthorizedError
from ..core.queue import ANONYMOUS

PUBLIC_ROUTES = frozenset({"livez", "healthz", "readyz", "dashboard"})
"""Service routes that answer without a token: the health checks (load balancers and probes
call them) and the dashboard's page and files (which hold no data: the page asks for a token
and sends it with every request for data)."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request.

    Attributes:
        owner: the owner its tasks get and the only one whose tasks it sees (a digest of
            its token, with isolation; None: it sees every task).
        tenant: the tenant its tasks belong to (the token's name; ``anonymous`` without
            tokens).
        admin: whether it may read app-wide numbers and every tenant's usage (an admin
            token, or any caller without isolation).
    """

    owner: str | None = None
    tenant: str = ANONYMOUS
    admin: bool = True


OPEN = Caller()  # every caller of an app without tokens
CALLER = "raytask.caller"  # where a checked request's Caller is kept in its ASGI scope


def caller_of(request: Any) -> Caller:
    """Who sent a request the token check passed (:data:`OPEN` for a public route)."""
    return request.scope.get(CALLER, OPEN)


class Tokens:
    """The app's API tokens.

    Args:
        tokens: the accepted tokens and their tenants' names (empty: the app is open).
        isolation: whether each task belongs to the token that submitted it.
        admins: the tokens that read everything (``admin_tokens``).
    """

    def __init__(
        self, tokens: Mapping[str, str], isolation: bool = False, admins: Iterable[str] = ()
    ) -> None:
        admin_digests = {_digest(token) for token in admins}
        self._entries = [
            (_digest(token), name, _digest(token) in admin_digests)
            for token, name in tokens.items()
        ]
        self.isolation = isolation and bool(self._entries)

    @property
    def required(self) -> bool:
        """Whether requests need a token."""
        return bool(self._entries)

    def check(self, authorization: list[str]) -> Caller:
        """Check a request's ``Authorization`` headers; return who sent it.

        Raises:
            UnauthorizedError: a token is required and the request has none it knows.
        """
        if not self._entries:
            return OPEN
        if len(authorization) != 1:
            raise UnauthorizedError(
                "this app needs an API token: send 'Authorization: Bearer <token>'"
            )
        scheme, _, token = authorization[0].partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthorizedError("send the API token as 'Authorization: Bearer <token>'")
        offered = _digest(token.strip())
        found = None
        for entry in self._entries:  # no early exit: the time is the same either way
            if hmac.compare_digest(offered, entry[0]):
                found = entry
        if found is None:
            raise UnauthorizedError("the API token is not one of this app's")
        _, tenant, admin = found
        if not self.isolation:
            return Caller(None, tenant, True)
        return Caller(None if admin else offered.hex()[:32], tenant, admin)
