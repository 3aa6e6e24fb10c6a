"""Webhooks, the pure half: events, Standard Webhooks signatures, URL rules, the retry plan.

A task submitted with ``webhook_url`` gets a POST there when one of its ``webhook_events``
happens: ``started``, ``progress``, ``output`` (a generator task streamed chunks; at most 2 a
second), ``completed`` (success), ``failed``, ``cancelled``. The
body is ``{"type": "task.completed", "timestamp": ISO, "data": <the status answer>}``, signed
as Standard Webhooks sign (https://www.standardwebhooks.com): ``webhook-id`` (the same for
every retry of one delivery), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature:
v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` with the app's ``whsec_...`` secret.
:func:`verify_webhook` checks one on the receiving side.

This module has no I/O: the task manager's delivery loop (``raytask.server.webhooks``)
sends what it describes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from .errors import InvalidInputError, WebhookVerificationError
from .state import WebhookState, iso
from .status import TaskStatus

EVENTS = ("started", "progress", "output", "completed", "failed", "cancelled")
DEFAULT_EVENTS = ("completed", "failed", "cancelled")
SECRET_ENV = "RAYTASK_WEBHOOK_SECRET"
DEFAULT_RETRY_DELAYS_S = (5.0, 30.0, 120.0, 600.0)
"""Waits before the 2nd..5th attempt: five attempts over about 12.5 minutes."""
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
URL_PATTERN = (
    r"^https?://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:" + _PORT + r")?(/[\x21-\x7e]*)?$"
)
"""What a webhook URL looks like: http(s), a host name or IPv4 address, an optional port,
and a path and query of visible ASCII (no user name or password, no IPv6 literal)."""
_EVENT = "(started|progress|output|completed|failed|cancelled)"
EVENTS_PATTERN = f"^{_EVENT}(,{_EVENT})*$"
"""``webhook_events`` as a query parameter: event names separated by commas."""
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
TOLERANCE_S = 300
"""How old (or how far in the future) a timestamp :func:`verify_webhook` accepts."""

_BY_STATUS = {
    TaskStatus.IN_PROGRESS: "started",
    TaskStatus.SUCCESS: "completed",
    TaskStatus.FAILURE: "failed",
    TaskStatus.CANCELLED: "cancelled",
}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to a task's webhook URL (journaled with its task, so it
    survives a manager restart); ``due`` is when its next attempt may go (epoch s)."""

    message_id: str
    event: str
    body: bytes
    attempts: int = 0
    due: float = 0.0


@dataclass(frozen=True, slots=True)
class WebhookLog:
    """A task's deliveries: what status shows, and those still to send. Replaced, never
    changed in place (the journal pickles it from another thread)."""

    summary: WebhookState
    pending: tuple[Delivery, ...] = ()

    def queued(self, delivery: Delivery) -> WebhookLog:
        """This log with one more delivery to send."""
        summary = WebhookState(state="pending", attempts=0, last_error=None)
        return WebhookLog(summary, (*self.pending, delivery))

    def attempted(
        self, delivery: Delivery, error: str | None, retry_at: float | None
    ) -> WebhookLog:
        """This log after an attempt of ``delivery``: delivered (no ``error``), waiting
        to retry (``retry_at``), or failed for good."""
        attempts = delivery.attempts + 1
        rest = tuple(d for d in self.pending if d.message_id != delivery.message_id)
        if error is not None and retry_at is not None:
            rest = (*rest, replace(delivery, attempts=attempts, due=retry_at))
        state = "delivered" if error is None else ("pending" if retry_at is not None else "failed")
        if rest and state != "pending":
            state = "pending"  # a later event still waits
        return WebhookLog(WebhookState(state=state, attempts=attempts, last_error=error), rest)


def event_of(status: TaskStatus) -> str | None:
    """The event a task entering ``status`` fires (None: a re-queue fires none)."""
    return _BY_STATUS.get(status)


def parse_events(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Events from ``"completed,failed"`` or a list, checked and in canonical order.

    Raises:
        ValueError: an unknown event, or none at all.
    """
    names = value.split(",") if isinstance(value, str) else list(value)
    unknown = sorted({str(name) for name in names} - set(EVENTS))
    if unknown or not names:
        raise ValueError(
            f"webhook_events must name some of {', '.join(EVENTS)} (got {', '.join(unknown)!r})"
            if unknown
            else "webhook_events must name at least one event"
        )
    return tuple(event for event in EVENTS if event in names)


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None


def check_secret(secret: str) -> str:
    """``secret`` if it is a usable ``whsec_<base64>`` secret (of at least 16 bytes).

    Raises:
        ValueError: it is not.
    """
    if len(_key(secret)) < 16:
        raise ValueError("a webhook secret needs at least 16 bytes of key after 'whsec_'")
    return secret


def new_secret() -> str:
    """A fresh random secret, ``whsec_`` and 32 bytes of base64."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one delivery attempt."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a received webhook and return its JSON payload.

    Args:
        secret: the app's ``whsec_...`` secret.
        headers: the request's headers (any case; a dict or Starlette/httpx headers).
        body: the raw request body, exactly as received.
        tolerance_s: how far the timestamp may be from now (replays are refused).

    Raises:
        WebhookVerificationError: a header is missing, the timestamp is stale, or no
            signature matches.

    Example::

        payload = raytask.verify_webhook(secret, request.headers, await request.body())
        if payload["type"] == "task.completed": ...
    """
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    try:
        message_id = lower["webhook-id"]
        timestamp_text = lower["webhook-timestamp"]
        signatures = lower["webhook-signature"]
    except KeyError as missing:
        raise WebhookVerificationError(f"missing header {missing.args[0]}") from None
    if not _TIMESTAMP.fullmatch(timestamp_text):
        raise WebhookVerificationError("webhook-timestamp is not 1 to 12 ASCII digits")
    timestamp = int(timestamp_text)
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too old or too new")
    raw = body.encode() if isinstance(body, str) else body
    expected = sign(secret, message_id, timestamp, raw)
    for candidate in signatures.split():
        if hmac.compare_digest(candidate, expected):
            return json.loads(raw)
    raise WebhookVerificationError("no webhook-signature matches")


def check_url(url: str, allow_private: bool = False) -> str:
    """``url`` if a webhook may be sent there: ``http``/``https`` with a host; an address
    that is loopback, private, link-local or otherwise not public is refused unless
    ``allow_private`` (host names are checked again, resolved, at delivery).

    Raises:
        InvalidInputError: the URL is not one.
    """
    if len(url) > 2048:
        raise InvalidInputError("webhook_url is longer than 2048 characters")
    if not re.fullmatch(URL_PATTERN, url):
        raise InvalidInputError(
            "webhook_url must be http(s)://host[:port][/path] with a host name or IPv4 "
            "address and visible ASCII characters only"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a bad port raises here)
    except ValueError:
        raise InvalidInputError(f"webhook_url is not a URL: {url[:100]!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError("webhook_url must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise InvalidInputError("webhook_url must not carry a user name or password")
    host = parts.hostname
    if not allow_private:
        if host == "localhost" or host.endswith(".localhost"):
            raise InvalidInputError(_PRIVATE.format(host))
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return url
        if not address_allowed(address, allow_private):
            raise InvalidInputError(_PRIVATE.format(host))
    return url


_PRIVATE = (
    "webhook_url points at {} (loopback, private or link-local): refused unless the app "
    "sets webhook_allow_private_networks"
)


_EMBEDDING_NETWORKS = (
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64, well-known prefix (RFC 6052)
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # NAT64, local use (RFC 8215)
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated, still routed by some)
)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and may reach (IPv4-mapped, -compatible,
    NAT64, 6to4, Teredo's client), else None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in network for network in _EMBEDDING_NETWORKS):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_allowed(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool
) -> bool:
    """Whether a webhook may go to ``address``: a public one (an IPv6 address that
    carries an IPv4 one is judged by that one too), or any unicast one with
    ``allow_private``."""
    if allow_private:
        return not address.is_unspecified and not address.is_multicast
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None and not inner.is_global:
            return False
    return address.is_global and not address.is_multicast


def retry_delay(attempts_done: int, delays_s: tuple[float, ...]) -> float | None:
    """Seconds to wait after ``attempts_done`` failed attempts, or None: give up."""
    if attempts_done < 1 or attempts_done > len(delays_s):
        return None
    delay = delays_s[attempts_done - 1]
    return delay if math.isfinite(delay) else None


def payload(event: str, data: dict[str, Any], timestamp: float) -> bytes:
    """The JSON body of one event."""
    body = {"type": f"task.{event}", "timestamp": iso(timestamp), "data": data}
    return json.dumps(body, separators=(",", ":")).encode()
