"""Webhook delivery, the I/O half: the task manager's sender of signed task events.

Each delivery is an asyncio task of its own, so a slow or dead receiver holds up nothing but
its own retries: the dispatch loop never awaits a delivery, at most
``webhook_max_concurrency`` requests are in flight, and each attempt ends within
``webhook_timeout_s``. Redirects are not followed, and a host name is resolved before each
attempt so that it cannot point at a private address unless the app allows those. A
delivery's state lives in its task's record (:class:`~raytask.core.webhooks.WebhookLog`),
so the journal keeps pending deliveries and a restarted manager sends them (same
``webhook-id``: receivers can tell a retry from a new event).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..core.config import AppConfig
from ..core.state import WebhookState
from ..core.table import TaskRecord
from ..core.webhooks import Delivery, WebhookLog, address_allowed, headers, payload, retry_delay

logger = logging.getLogger("raytask.webhooks")

MAX_ERROR_CHARS = 300


class Webhooks:
    """Send the events of tasks that have a ``webhook_url``.

    Args:
        config: the app's settings (secret, timeout, retry delays, private networks).
        state_of: the status answer of a record, as JSON (the event's ``data``).
        changed: called with a record whose deliveries changed (the manager journals it).
        clock: epoch seconds.
        transport: an httpx transport (unit tests pass ``httpx.MockTransport``).
    """

    def __init__(
        self,
        config: AppConfig,
        state_of: Callable[[TaskRecord], dict[str, Any]],
        changed: Callable[[TaskRecord], None],
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.state_of, self.changed, self.clock = state_of, changed, clock
        self._transport = transport
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
            error = await self._attempt(url, delivery)
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
        """One POST; returns why it failed, or None when the receiver answered 2xx."""
        secret = self.config.resolved_webhook_secret()
        if secret is None:
            return "no webhook secret is configured (webhook_secret or RAYTASK_WEBHOOK_SECRET)"
        async with self._limit:
            try:
                await self._check_host(url)
                sent = headers(secret, delivery.message_id, int(self.clock()), delivery.body)
                response = await self._client().post(
                    url, content=delivery.body, headers=sent, timeout=self.config.webhook_timeout_s
                )
            except (httpx.HTTPError, OSError, ValueError) as exc:
                return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS] or type(exc).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"the receiver answered {response.status_code}"

    async def _check_host(self, url: str) -> None:
        if self.config.webhook_allow_private_networks:
            return
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port)
        for *_, address in found:
            if not address_allowed(ipaddress.ip_address(address[0]), False):
                raise ValueError(f"{parts.hostname} resolves to a non-public address {address[0]}")

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                follow_redirects=False,
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
