"""Webhook delivery, the I/O half: the task manager's sender of signed task events.

Each delivery is an asyncio task of its own, so a slow or dead receiver holds up nothing but
its own retries: the dispatch loop never awaits a delivery, at most
``webhook_max_concurrency`` requests are in flight, and each attempt ends within
``webhook_timeout_s`` in all. Redirects are not followed, and a host name is resolved once
per attempt and the connection made to that very address, so that it cannot point at a
private address unless the app allows those (not even by answering the lookup twice). A
delivery's state lives in its task's record (:class:`~raytask.core.webhooks.WebhookLog`),
so the journal keeps pending deliveries and a restarted manager sends them (same
``webhook-id``: receivers can tell a retry from a new event).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..core.config import AppConfig
from ..core.state import WebhookState
from ..core.table import TaskRecord
from ..core.webhooks import Delivery, WebhookLog, address_allowed, headers, payload, retry_delay

logger = logging.getLogger("raytask.webhooks")

MAX_ERROR_CHARS = 300
MAX_ANSWER_BYTES = 64 * 1024
"""The most of a receiver's answer one attempt reads (its status code is what counts)."""


class RefusedAddressError(ValueError):
    """A webhook's host resolves to an address webhooks may not reach."""


async def _resolve(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]  # an address already: nothing to look up
    except ValueError:
        pass
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [entry[4][0].split("%")[0] for entry in found]  # no IPv6 zone: not a public one


async def _read_at_most(response: httpx.Response, limit: int) -> None:
    if response.is_stream_consumed:  # an in-process transport read it already
        return
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= limit:
            return


class Webhooks:
    """Send the events of tasks that have a ``webhook_url``.

    Args:
        config: the app's settings (secret, timeout, retry delays, private networks).
        state_of: the status answer of a record, as JSON (the event's ``data``).
        changed: called with a record whose deliveries changed (the manager journals it).
        clock: epoch seconds.
        transport: an httpx transport (unit tests pass ``httpx.MockTransport``).
        resolve: ``(host, port)`` to its addresses (default: the system's resolver).
    """

    def __init__(
        self,
        config: AppConfig,
        state_of: Callable[[TaskRecord], dict[str, Any]],
        changed: Callable[[TaskRecord], None],
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        resolve: Callable[[str, int], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.state_of, self.changed, self.clock = state_of, changed, clock
        self._transport = transport
        self._resolve = resolve or _resolve
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self.configure(config)

    def configure(self, config: AppConfig) -> None:
        """Take new settings (a redeployed app)."""
        self.config = config
        self._limit = asyncio.Semaphore(config.webhook_max_concurrency)

    def fire(self, record: TaskRecord, event: str) -> None:
        """Queue ``event`` of ``record`` for its webhook, if it has one that wants it."""
        options = record.options
        if options.webhook_url is None or event not in options.webhook_events:
            return
        now = self.clock()
        body = payload(event, self.state_of(record), now)
        delivery = Delivery(f"msg_{uuid.uuid4().hex}", event, body, 0, now)
        log = record.webhook or WebhookLog(WebhookState(state="pending"))
        record.webhook = log.queued(delivery)
        self._start(record, delivery)

    def resume(self, records: Iterable[TaskRecord]) -> int:
        """Send the pending deliveries of restored records; returns how many."""
        count = 0
        for record in records:
            for delivery in record.webhook.pending if record.webhook else ():
                self._start(record, delivery)
                count += 1
        return count

    def _start(self, record: TaskRecord, delivery: Delivery) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(record, delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, record: TaskRecord, delivery: Delivery) -> None:
        url = record.options.webhook_url
        while url is not None:
            wait_s = delivery.due - self.clock()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            try:
                error = await self._attempt(url, delivery)
            except Exception as exc:  # a bug must not leave the delivery pending forever
                logger.exception("raytask webhook attempt to task %s failed", record.task_id)
                error = f"internal error ({type(exc).__name__})"
            attempts = delivery.attempts + 1
            delay = None if error is None else retry_delay(attempts, self._delays())
            retry_at = None if delay is None else self.clock() + delay
            log = record.webhook or WebhookLog(WebhookState(state="pending"))
            record.webhook = log.attempted(delivery, error, retry_at)
            self.changed(record)
            if error is None or retry_at is None:
                if error is not None:
                    logger.warning(
                        "raytask webhook %s of task %s failed after %d attempts: %s",
                        delivery.event,
                        record.task_id,
                        attempts,
                        error,
                    )
                return
            delivery = next(
                d for d in record.webhook.pending if d.message_id == delivery.message_id
            )

    def _delays(self) -> tuple[float, ...]:
        return self.config.webhook_retry_delays_s

    async def _attempt(self, url: str, delivery: Delivery) -> str | None:
        """One POST; returns why it failed, or None when the receiver answered 2xx.

        The whole attempt (name lookup, connect, send, answer) has ``webhook_timeout_s``,
        and at most :data:`MAX_ANSWER_BYTES` of the answer are read: a receiver that
        trickles holds its slot no longer than that.
        """
        secret = self.config.resolved_webhook_secret()
        if secret is None:
            return "no webhook secret is configured (webhook_secret or RAYTASK_WEBHOOK_SECRET)"
        timeout_s = self.config.webhook_timeout_s
        client = self._client()  # made once (its TLS context is slow), outside the deadline
        async with self._limit:
            try:
                async with asyncio.timeout(timeout_s):
                    request = await self._request(url, secret, delivery)
                    response = await client.send(request, stream=True)
                    try:
                        await _read_at_most(response, MAX_ANSWER_BYTES)
                    finally:
                        await response.aclose()
            except TimeoutError:
                return f"no answer within webhook_timeout_s={timeout_s:g} s"
            except RefusedAddressError as exc:
                return str(exc)
            except (httpx.HTTPError, OSError, ValueError) as exc:
                return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS] or type(exc).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"the receiver answered {response.status_code}"

    async def _request(self, url: str, secret: str, delivery: Delivery) -> httpx.Request:
        """The POST of one attempt, sent to the very address that was checked: the host
        name is resolved once, here, and the connection goes to that address (the
        ``Host`` header and the TLS server name keep the name), so a second DNS answer
        cannot point it elsewhere (DNS rebinding)."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = await self._address(host, port)
        sent = headers(secret, delivery.message_id, int(self.clock()), delivery.body)
        sent["host"] = parts.netloc
        target = httpx.URL(url).copy_with(host=str(address))
        return self._client().build_request(
            "POST",
            target,
            content=delivery.body,
            headers=sent,
            extensions={"sni_hostname": host} if parts.scheme == "https" else {},
        )

    async def _address(self, host: str, port: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The address to connect to: every address ``host`` resolves to must be allowed
        (one private answer refuses the lot), and the first is used."""
        allow_private = self.config.webhook_allow_private_networks
        addresses = [ipaddress.ip_address(a) for a in await self._resolve(host, port)]
        refused = [a for a in addresses if not address_allowed(a, allow_private)]
        if refused or not addresses:
            # The operator's log may name the address; the task's status must not (it
            # would show other tenants the manager's view of the internal network).
            logger.warning("raytask webhook to %s refused: it resolves to %s", host, refused)
            raise RefusedAddressError("refused: non-public address")
        return addresses[0]

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,  # a proxy from the environment would resolve the name again
                headers={"user-agent": "raytask-webhooks/1"},
                transport=self._transport,
            )
        return self._http

    async def idle(self) -> None:
        """Wait until no delivery is in progress or waiting to retry (for tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Stop every delivery (they stay pending in the journal) and close the pool."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
