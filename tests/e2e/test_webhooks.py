"""Signed webhooks on a real local Ray + Serve, to a real receiver on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import raytask
from raytask.core.webhooks import new_secret

from ..support import wait_for
from .conftest import App, Cluster

pytestmark = pytest.mark.e2e

SECRET = new_secret()


class Receiver:
    """An HTTP server on 127.0.0.1 that records every webhook: ``/ok`` answers 200,
    ``/flaky`` 500 twice and then 200, ``/hang`` never answers in time."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.received.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "at": time.monotonic(),
                        }
                    )
                    flaky_seen = sum(r["path"] == "/flaky" for r in receiver.received)
                if self.path == "/hang":
                    time.sleep(3)
                code = 500 if self.path == "/flaky" and flaky_seen <= 2 else 200
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.received if r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def hooks_app(cluster: Cluster) -> Iterator[App]:
    app = App(
        cluster,
        "hooks",
        webhook_secret=SECRET,
        webhook_allow_private_networks=True,  # the receiver is on 127.0.0.1
        webhook_retry_delays_s=[0.3, 0.3],  # three attempts, quickly
        webhook_timeout_s=1.0,
    )
    yield app
    app.close()


def webhook_of(app: App, task_id: str, want: str, timeout_s: float = 60) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        webhook = app.status("wordcount", task_id)["webhook"]
        return webhook if webhook and webhook["state"] == want else None

    return wait_for(settled, timeout_s, f"task {task_id}'s webhook to be {want}")


def test_a_completed_tasks_webhook_arrives_once_and_signed(
    hooks_app: App, receiver: Receiver
) -> None:
    task_id = hooks_app.submit("wordcount", {"text": "hook me"}, webhook_url=f"{receiver.url}/ok")
    webhook = webhook_of(hooks_app, task_id, "delivered")
    assert webhook == {"state": "delivered", "attempts": 1, "last_error": None}
    (arrived,) = [r for r in receiver.on("/ok") if task_id.encode() in r["body"]]
    payload = raytask.verify_webhook(SECRET, arrived["headers"], arrived["body"])
    assert payload["type"] == "task.completed"
    assert payload["data"]["task_id"] == task_id and payload["data"]["status"] == "success"
    assert arrived["headers"]["webhook-id"].startswith("msg_")


def test_a_receiver_that_fails_twice_gets_three_attempts(
    hooks_app: App, receiver: Receiver
) -> None:
    task_id = hooks_app.submit("wordcount", {"text": "flaky"}, webhook_url=f"{receiver.url}/flaky")
    webhook = webhook_of(hooks_app, task_id, "delivered")
    assert webhook["attempts"] == 3
    attempts = receiver.on("/flaky")
    assert len(attempts) == 3
    assert len({a["headers"]["webhook-id"] for a in attempts}) == 1  # one delivery, retried
    for attempt in attempts:  # each attempt signed anew
        raytask.verify_webhook(SECRET, attempt["headers"], attempt["body"])


def test_a_receiver_that_never_answers_fails_without_delaying_others(
    hooks_app: App, receiver: Receiver
) -> None:
    stuck = hooks_app.submit("wordcount", {"text": "stuck"}, webhook_url=f"{receiver.url}/hang")
    hooks_app.wait_status("wordcount", stuck, "success")
    webhook_of(hooks_app, stuck, "pending")
    fine = hooks_app.submit("wordcount", {"text": "fine"}, webhook_url=f"{receiver.url}/ok")
    done = hooks_app.wait_status("wordcount", fine, "success")
    webhook_of(hooks_app, fine, "delivered", timeout_s=10)  # while the other one hangs
    assert hooks_app.status("wordcount", stuck)["webhook"]["state"] == "pending"
    assert done["status"] == "success"
    failed = webhook_of(hooks_app, stuck, "failed", timeout_s=60)
    assert failed["attempts"] == 3 and "no answer within webhook_timeout_s" in failed["last_error"]


def test_started_and_progress_events_when_asked_for(hooks_app: App, receiver: Receiver) -> None:
    url = f"{receiver.url}/ok"
    task_id = hooks_app.submit(
        "steps",
        {"count": 4, "seconds": 0.3},
        webhook_url=url,
        webhook_events="started,progress,completed",
    )
    hooks_app.wait_status("steps", task_id, "success")

    def types() -> list[str] | None:
        mine = [r for r in receiver.on("/ok") if task_id.encode() in r["body"]]
        kinds = [raytask.verify_webhook(SECRET, r["headers"], r["body"])["type"] for r in mine]
        return kinds if "task.completed" in kinds else None

    kinds = wait_for(types, 30, "the completed event")
    assert {"task.started", "task.progress"} <= set(kinds)
