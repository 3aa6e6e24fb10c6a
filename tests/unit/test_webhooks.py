"""Webhooks: Standard Webhooks signatures, URL rules, the retry plan, and the deliverer over
a fake transport (the e2e tier sends real ones to a receiver on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any

import httpx
import pytest

import raytask
from raytask.core.config import AppConfig, SubmitOptions, TaskOptions
from raytask.core.errors import InvalidInputError, WebhookVerificationError
from raytask.core.status import TaskStatus
from raytask.core.table import TaskTable
from raytask.core.webhooks import (
    address_allowed,
    check_url,
    event_of,
    headers,
    new_secret,
    parse_events,
    retry_delay,
    sign,
)
from raytask.server.webhooks import Webhooks

# The test vector Standard Webhooks publishes with its reference libraries.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_signature_matches_the_published_test_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_verify_accepts_the_vector_and_refuses_what_does_not_check_out() -> None:
    sent = headers(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    assert sent["webhook-signature"] == VECTOR_SIGNATURE
    now = VECTOR_TIMESTAMP + 10
    assert raytask.verify_webhook(VECTOR_SECRET, sent, VECTOR_BODY, now=now) == {"test": 2432232314}
    several = {**sent, "webhook-signature": "v1,bm9wZQ== " + VECTOR_SIGNATURE}  # key rotation
    assert raytask.verify_webhook(VECTOR_SECRET, several, VECTOR_BODY, now=now)
    with pytest.raises(WebhookVerificationError, match="too old"):
        raytask.verify_webhook(VECTOR_SECRET, sent, VECTOR_BODY, now=VECTOR_TIMESTAMP + 301)
    with pytest.raises(WebhookVerificationError, match="no webhook-signature"):
        raytask.verify_webhook(VECTOR_SECRET, sent, VECTOR_BODY + b" ", now=now)
    with pytest.raises(WebhookVerificationError, match="no webhook-signature"):
        raytask.verify_webhook(new_secret(), sent, VECTOR_BODY, now=now)
    with pytest.raises(WebhookVerificationError, match="missing header webhook-id"):
        raytask.verify_webhook(VECTOR_SECRET, {}, VECTOR_BODY, now=now)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.0.0.5/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata: link-local
        "http://0.0.0.0/",
        "ftp://example.com/",
        "http:///no-host",
        "http://user:pw@example.com/",
        "http://[::1]/",
        "https://example.com:99999/",
        "https://exa mple.com/",
    ],
)
def test_urls_that_are_refused(url: str) -> None:
    with pytest.raises(InvalidInputError):
        check_url(url)


def test_urls_that_are_taken_and_private_ones_when_allowed() -> None:
    assert check_url("https://hooks.example.com/a?b=c") == "https://hooks.example.com/a?b=c"
    assert check_url("http://8.8.8.8:8443/x")
    assert check_url("http://127.0.0.1:8080/hook", allow_private=True)
    with pytest.raises(InvalidInputError):
        check_url("ftp://127.0.0.1/", allow_private=True)


def test_events_and_their_order() -> None:
    assert parse_events("failed,completed") == ("completed", "failed")
    assert event_of(TaskStatus.SUCCESS) == "completed"
    assert event_of(TaskStatus.PENDING) is None
    for bad in ("", "done", "completed,", "completed, failed"):
        with pytest.raises(ValueError):
            parse_events(bad)
    assert SubmitOptions(webhook_events="progress").apply(TaskOptions()).webhook_events == (
        "progress",
    )


def test_the_retry_plan() -> None:
    delays = AppConfig().webhook_retry_delays_s
    assert [retry_delay(n, delays) for n in range(1, 6)] == [5.0, 30.0, 120.0, 600.0, None]
    assert sum(delays) == 755  # five attempts over about 12.5 minutes


class Receiver:
    """A fake receiver: answers the status codes it is given, records what arrives."""

    def __init__(self, *codes: int) -> None:
        self.codes = list(codes)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.codes.pop(0) if self.codes else 200)


def deliverer(receiver: Any, **config: Any) -> tuple[Webhooks, TaskTable, list[str]]:
    settings = AppConfig(
        **{
            "webhook_secret": VECTOR_SECRET,
            "webhook_allow_private_networks": True,
            "webhook_retry_delays_s": (0.01, 0.01),
            **config,
        }
    )
    table = TaskTable()
    journaled: list[str] = []
    hooks = Webhooks(
        settings,
        lambda r: r.state().wire(),
        lambda r: journaled.append(r.task_id),
        transport=httpx.MockTransport(receiver),
    )
    return hooks, table, journaled


def hooked(table: TaskTable, events: tuple[str, ...] = ("completed",)) -> Any:
    options = TaskOptions(webhook_url="http://127.0.0.1:9/hook", webhook_events=events)
    return table.submit("e", {"x": 1}, options)


async def test_a_delivery_is_signed_and_retried_until_delivered() -> None:
    receiver = Receiver(500, 503, 200)
    hooks, table, journaled = deliverer(receiver)
    record = hooked(table)
    table.pop_next("e")
    table.succeed(record.task_id)
    hooks.fire(record, "completed")
    assert record.state().webhook.state == "pending"  # type: ignore[union-attr]
    await hooks.idle()
    assert len(receiver.requests) == 3
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert len(ids) == 1  # one delivery: the same id on every retry
    last = receiver.requests[-1]
    body = raytask.verify_webhook(VECTOR_SECRET, last.headers, last.content)
    assert body["type"] == "task.completed" and body["data"]["task_id"] == record.task_id
    assert body["data"]["status"] == "success"
    webhook = record.state().webhook
    assert webhook is not None and (webhook.state, webhook.attempts) == ("delivered", 3)
    assert webhook.last_error is None and journaled.count(record.task_id) == 3
    assert record.webhook is not None and record.webhook.pending == ()


async def test_a_receiver_that_keeps_failing_ends_failed() -> None:
    receiver = Receiver(500, 500, 500, 500)
    hooks, table, _ = deliverer(receiver)
    record = hooked(table)
    hooks.fire(record, "completed")
    await hooks.idle()
    webhook = record.state().webhook
    assert webhook is not None and webhook.state == "failed" and webhook.attempts == 3
    assert webhook.last_error == "the receiver answered 500"
    assert len(receiver.requests) == 3  # 1 + two retries


async def test_redirects_are_not_followed() -> None:
    def redirect(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(307, headers={"location": "http://169.254.169.254/"})

    seen: list[str] = []
    hooks, table, _ = deliverer(redirect)
    record = hooked(table)
    hooks.fire(record, "completed")
    await hooks.idle()
    assert seen == ["http://127.0.0.1:9/hook"] * 3  # never the Location
    assert record.webhook is not None and record.webhook.summary.state == "failed"
    assert record.webhook.summary.last_error == "the receiver answered 307"


async def test_only_the_events_asked_for_are_sent() -> None:
    receiver = Receiver()
    hooks, table, _ = deliverer(receiver)
    record = hooked(table, events=("failed",))
    hooks.fire(record, "completed")
    hooks.fire(record, "started")
    await hooks.idle()
    assert receiver.requests == [] and record.webhook is None


async def test_a_slow_receiver_does_not_hold_up_another_task() -> None:
    async def slow_or_fast(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/slow":
            await asyncio.sleep(5)
        return httpx.Response(200)

    hooks, table, _ = deliverer(slow_or_fast, webhook_timeout_s=5)
    slow = table.submit("e", {}, TaskOptions(webhook_url="http://127.0.0.1:9/slow"))
    fast = table.submit("e", {}, TaskOptions(webhook_url="http://127.0.0.1:9/fast"))
    hooks.fire(slow, "completed")
    hooks.fire(fast, "completed")
    for _ in range(100):
        await asyncio.sleep(0.01)
        if fast.webhook is not None and fast.webhook.summary.state == "delivered":
            break
    assert fast.webhook is not None and fast.webhook.summary.state == "delivered"
    assert slow.webhook is not None and slow.webhook.summary.state == "pending"
    await hooks.close()


async def test_a_host_name_that_resolves_to_a_private_address_is_refused() -> None:
    receiver = Receiver()
    hooks, table, _ = deliverer(receiver)
    hooks.config = hooks.config.model_copy(update={"webhook_allow_private_networks": False})
    record = table.submit("e", {}, TaskOptions(webhook_url="http://localhost:9/x"))
    hooks.fire(record, "completed")
    await hooks.idle()
    assert receiver.requests == []
    assert record.webhook is not None and "non-public" in str(record.webhook.summary.last_error)


async def test_the_body_is_the_status_answer_in_an_envelope() -> None:
    receiver = Receiver()
    hooks, table, _ = deliverer(receiver)
    record = hooked(table)
    hooks.fire(record, "completed")
    delivery = record.webhook.pending[0]  # type: ignore[union-attr]
    body = json.loads(delivery.body)
    assert set(body) == {"type", "timestamp", "data"} and body["data"]["task_id"] == record.task_id
    assert body["type"] == "task.completed" and body["timestamp"].endswith("+00:00")
    await hooks.close()


async def test_without_a_secret_a_delivery_fails_and_says_why() -> None:
    receiver = Receiver()
    hooks, table, _ = deliverer(receiver)
    hooks.config = hooks.config.model_copy(update={"webhook_secret": None})
    record = hooked(table)
    hooks.fire(record, "completed")
    await hooks.idle()
    assert receiver.requests == []
    assert "no webhook secret" in str(record.webhook.summary.last_error)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a00:5",  # NAT64 of 10.0.0.5
        "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 of 169.254.169.254
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "::ffff:10.0.0.1",  # IPv4-mapped
        "100.64.0.1",  # shared address space (CGNAT): neither private nor global
        "ff02::1",  # multicast
    ],
)
def test_addresses_that_carry_or_are_non_public_ones_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address), allow_private=False)


def test_public_addresses_are_allowed_and_private_ones_only_when_asked() -> None:
    for public in ("8.8.8.8", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::"):
        assert address_allowed(ipaddress.ip_address(public), allow_private=False), public
    assert address_allowed(ipaddress.ip_address("127.0.0.1"), allow_private=True)
    assert not address_allowed(ipaddress.ip_address("0.0.0.0"), allow_private=True)


def test_localhost_names_are_refused_by_suffix_too() -> None:
    for url in ("http://api.localhost/x", "http://LOCALHOST/x", "http://a.b.localhost:8/"):
        with pytest.raises(InvalidInputError, match="refused unless"):
            check_url(url)
    assert check_url("http://notlocalhost.example/x")  # a suffix of the label, not the name


@pytest.mark.parametrize(
    "timestamp", ["9" * 400, "1e9", "-1614265330", " 1614265330", "١٦١٤٢٦٥٣٣٠", "", "0x10"]
)
def test_a_timestamp_that_is_not_1_to_12_ascii_digits_is_a_verification_error(
    timestamp: str,
) -> None:
    sent = headers(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    sent["webhook-timestamp"] = timestamp
    with pytest.raises(WebhookVerificationError, match="1 to 12 ASCII digits"):
        raytask.verify_webhook(VECTOR_SECRET, sent, VECTOR_BODY, now=VECTOR_TIMESTAMP)


class Rebinder:
    """A DNS server that answers a public address first and loopback after (rebinding)."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return [self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]]


async def test_a_delivery_connects_to_the_address_that_was_checked() -> None:
    receiver = Receiver()
    resolve = Rebinder("93.184.216.34", "127.0.0.1")
    hooks, table, _ = deliverer(receiver)
    hooks.config = hooks.config.model_copy(update={"webhook_allow_private_networks": False})
    hooks._resolve = resolve
    record = table.submit("e", {}, TaskOptions(webhook_url="https://hooks.example.com:8443/x"))
    hooks.fire(record, "completed")
    await hooks.idle()
    (request,) = receiver.requests
    assert resolve.asked == ["hooks.example.com"]  # resolved once, then connected there
    assert (request.url.host, request.url.port) == ("93.184.216.34", 8443)
    assert request.headers["host"] == "hooks.example.com:8443"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert record.webhook is not None and record.webhook.summary.state == "delivered"


async def test_one_non_public_answer_refuses_the_delivery_and_the_error_names_no_address() -> None:
    receiver = Receiver()
    hooks, table, _ = deliverer(receiver, webhook_retry_delays_s=())
    hooks.config = hooks.config.model_copy(update={"webhook_allow_private_networks": False})

    async def both(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.1.2.3"]

    hooks._resolve = both
    record = table.submit("e", {}, TaskOptions(webhook_url="http://hooks.example.com/x"))
    hooks.fire(record, "completed")
    await hooks.idle()
    assert receiver.requests == []
    summary = record.webhook.summary  # type: ignore[union-attr]
    assert (summary.state, summary.last_error) == ("failed", "refused: non-public address")


async def test_a_delivery_goes_to_the_resolved_address_on_a_real_socket() -> None:
    # A name no DNS knows, resolved by the deliverer to 127.0.0.1: the POST arrives, with
    # the name in its Host header, so the connection used the checked answer alone.
    arrived: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hooks, table, _ = deliverer(None)
    hooks._transport = None

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    hooks._resolve = resolve
    url = f"http://receiver.invalid:{port}/hook"
    record = table.submit("e", {}, TaskOptions(webhook_url=url))
    hooks.fire(record, "completed")
    await hooks.idle()
    await hooks.close()
    server.close()
    assert record.webhook is not None and record.webhook.summary.state == "delivered"
    assert f"host: receiver.invalid:{port}".encode() in arrived[0].lower()


async def test_a_trickling_receiver_holds_its_slot_no_longer_than_the_timeout() -> None:
    # Headers at once, then a byte a while: a per-read timeout never fires; the attempt's
    # total deadline does. And a huge answer is not read past 64 KiB.
    handlers: list[asyncio.Task[Any]] = []

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n")
            for _ in range(200):
                writer.write(b"x" * (1024 if big else 1))
                await writer.drain()
                await asyncio.sleep(0 if big else 0.05)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hooks, table, _ = deliverer(None, webhook_timeout_s=0.5, webhook_retry_delays_s=())
    hooks._transport = None
    url = f"http://127.0.0.1:{port}/hook"
    big = False
    record = table.submit("e", {}, TaskOptions(webhook_url=url))
    started = asyncio.get_running_loop().time()
    hooks.fire(record, "completed")
    await hooks.idle()
    assert asyncio.get_running_loop().time() - started < 5  # 200 bytes x 0.05 s = 10 s
    summary = record.webhook.summary  # type: ignore[union-attr]
    assert summary.last_error == "no answer within webhook_timeout_s=0.5 s"
    big = True  # 200 KiB at full speed: the attempt stops reading at 64 KiB and succeeds
    record = table.submit("e", {}, TaskOptions(webhook_url=url))
    hooks.fire(record, "completed")
    await hooks.idle()
    assert record.webhook is not None and record.webhook.summary.state == "delivered"
    await hooks.close()
    server.close()
    for handler in handlers:  # a handler still writing to a gone client ends here
        handler.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    await server.wait_closed()
