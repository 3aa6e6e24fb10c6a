"""The dashboard in a real headless Chromium (Debian's), against a real app on Ray.

Playwright drives the system browser (Playwright's own browser downloads are not reachable
here). ``make test`` installs Debian's ``chromium`` where it can (root and apt-get); without
it these tests skip and say why. ``RAYTASK_DASHBOARD_SCREENSHOT=path`` saves a screenshot.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from ..support import missing, wait_for
from .conftest import App, Cluster

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("RAYTASK_CHROMIUM") or shutil.which("chromium")
TOKEN = "dashboard-token-0001"  # the admin's
ALICE = "dashboard-alice-0002"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        missing(
            "no chromium on this machine: `make test` installs Debian's chromium when it "
            "runs as root with apt-get; or set RAYTASK_CHROMIUM to a Chromium binary"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    opened.errors = []
    opened.on(
        "console",
        lambda message: opened.errors.append(message.text) if message.type == "error" else None,
    )
    opened.on("pageerror", lambda error: opened.errors.append(str(error)))
    yield opened
    context.close()


def row(task_id: str, status: str) -> str:
    return f'#tasks tr[data-task="{task_id}"][data-status="{status}"]'


def test_tasks_appear_finish_and_can_be_cancelled(main_app: App, page: Any) -> None:
    page.goto(f"{main_app.url}/dashboard")
    page.wait_for_selector("#endpoints tbody tr")  # the queue's numbers are in
    assert page.inner_text("#app-name") == "main"
    done = main_app.submit("wordcount", {"text": "seen in a browser"})
    page.wait_for_selector(row(done, "success"), timeout=30_000)
    running = main_app.submit("block", {"seconds": 60, "tag": "dashboard"})
    main_app.wait_running("dashboard")
    page.wait_for_selector(row(running, "in_progress"), timeout=30_000)
    page.click(f'{row(running, "in_progress")} button[data-action="cancel"]')
    page.wait_for_selector(row(running, "cancelled"), timeout=30_000)
    main_app.wait_stopped("dashboard")
    page.select_option("#status-filter", "cancelled")
    page.wait_for_selector(row(done, "success"), state="detached")  # filtered out
    page.wait_for_selector(row(running, "cancelled"))
    page.select_option("#status-filter", "")
    page.click(f'{row(running, "cancelled")} button[data-action="retry"]')
    page.wait_for_function(
        '() => document.querySelectorAll(\'#tasks tr[data-status="in_progress"], '
        '#tasks tr[data-status="pending"]\').length > 0',
        timeout=30_000,
    )
    page.click(f'{row(done, "success")} button[data-action="delete"]')
    page.wait_for_selector(row(done, "success"), state="detached", timeout=30_000)
    gone = main_app.http.get("/wordcount/status", params={"task_id": done})
    assert gone.status_code == 404  # deleted, not just hidden
    screenshot = os.environ.get("RAYTASK_DASHBOARD_SCREENSHOT")
    if screenshot:
        page.wait_for_timeout(4000)  # a few chart samples
        page.screenshot(path=screenshot, full_page=True)
    assert page.errors == []


def test_a_generator_tasks_output_shows_live(main_app: App, page: Any) -> None:
    words = [f"word{n}" for n in range(12)]
    task_id = main_app.submit("words", {"text": " ".join(words), "delay_s": 0.5})
    page.goto(f"{main_app.url}/dashboard")
    page.click(f'{row(task_id, "in_progress")} button[data-action="output"]', timeout=30_000)
    page.wait_for_function(  # the first words, while the task still runs
        "() => document.getElementById('output-chunks').textContent.includes('word1')",
        timeout=30_000,
    )
    assert main_app.status("words", task_id)["status"] == "in_progress"
    assert page.inner_text("#output-state").startswith("running:")
    page.wait_for_function(
        "() => document.getElementById('output-state').textContent.startsWith('success')",
        timeout=30_000,
    )
    assert page.inner_text("#output-chunks").split() == words
    assert page.inner_text("#output-state") == "success: 12 chunks"
    assert page.errors == []


def test_batch_jobs_are_listed_with_their_counts(main_app: App, page: Any) -> None:
    import raytask

    with raytask.SyncHTTPClient(main_app.url) as client:
        job = client.wordcount.batch([{"text": f"line {i}"} for i in range(7)] + [{"text": 1}])
        done = client.wordcount.batch([{"text": f"line {i}"} for i in range(7)])
        assert job.wait(timeout=60).status == "failed"  # line 8's text is not a string
        done.wait(timeout=60)
    page.goto(f"{main_app.url}/dashboard")
    finished = f'#batches tr[data-batch="{done.id}"][data-status="completed"]'
    page.wait_for_selector(finished, timeout=30_000)
    assert page.inner_text(f"{finished} td.completed") == "7"
    assert page.inner_text(f"{finished} td.failed") == "0"
    assert "7 / 7" in page.inner_text(finished)
    page.wait_for_selector(f'#batches tr[data-batch="{job.id}"][data-status="failed"]')
    assert page.errors == []


def test_the_api_page_renders_every_endpoint_with_no_errors(
    main_app: App, root_app: App, page: Any
) -> None:
    page.goto(f"{main_app.url}/docs")
    document = main_app.http.get("/openapi.json").json()
    endpoints = {
        tag
        for ops in document["paths"].values()
        for op in ops.values()
        for tag in op.get("tags", ())
    }
    endpoints -= {"tasks", "service"}
    assert endpoints and "wordcount" in endpoints
    for name in endpoints:
        assert page.is_visible(f"#endpoint-{name}"), name
    for path in document["paths"]:
        assert page.locator(f'code:text-is("{path}")').count() >= 1, path

    # the other app on this Serve instance, linked from the page (SPEC 2); the ingress
    # keeps Serve's list of apps 10 s, so a page loaded before root was deployed lacks it
    def linked() -> bool:
        if page.locator('a:text-is("root: docs")').count():
            return True
        page.reload()
        return False

    wait_for(linked, 30, "the page to link the root app")
    page.click('a:text-is("root: docs")')
    page.wait_for_url(f"{root_app.url}/docs")
    assert page.is_visible("#endpoint-wordcount")
    assert page.errors == []


@pytest.fixture(scope="module")
def locked_app(cluster: Cluster) -> Iterator[App]:
    app = App(
        cluster,
        "locked",
        api_tokens={"ops": TOKEN, "alice": ALICE},
        admin_tokens=[TOKEN],
        token_isolation=True,
    )
    yield app
    app.close()


def test_with_tokens_on_it_asks_for_one_and_sends_it(locked_app: App, page: Any) -> None:
    page.goto(f"{locked_app.url}/dashboard")
    page.wait_for_selector("#token-form:not([hidden])")
    page.fill("#token", "not-the-token-000")
    page.click("#token-form button")
    page.wait_for_selector("#token-error:has-text('refused')")
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    page.wait_for_selector("#endpoints tbody tr")
    assert page.is_hidden("#token-form")
    assert page.inner_text("#app-name") == "locked"
    # the console shows the 401s of the first tries: those are the only errors
    assert all("401" in error for error in page.errors), page.errors


def test_usage_shows_per_tenant_and_a_tenant_sees_only_its_own(locked_app: App, page: Any) -> None:
    # (plain httpx: Playwright's sync API runs an event loop in this thread)
    def run(token: str, texts: list[str]) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        ids = [
            locked_app.http.post("/wordcount/submit", json={"text": t}, headers=headers).json()[
                "task_id"
            ]
            for t in texts
        ]

        def done(task_id: str) -> bool:
            answer = locked_app.http.get(
                "/wordcount/status", params={"task_id": task_id}, headers=headers
            )
            return answer.json()["status"] == "success"

        for task_id in ids:
            wait_for(lambda t=task_id: done(t), 60, "the tasks")

    run(ALICE, ["a b"] * 3)
    run(TOKEN, ["c"])
    page.goto(f"{locked_app.url}/dashboard")
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    mine = '#usage tr[data-tenant="alice"][data-endpoint="wordcount"]'
    page.wait_for_selector(mine, timeout=30_000)
    assert page.inner_text(f"{mine} td.tasks") == "3"
    assert page.inner_text(f"{mine} td.succeeded") == "3"
    assert page.inner_text(f"{mine} td.running") == "0"  # the admin sees the live counts
    assert page.is_visible('#usage tr[data-tenant="ops"]')
    assert page.is_visible("#endpoints") and page.is_hidden("#no-overview")
    page.evaluate("sessionStorage.clear()")
    page.goto(f"{locked_app.url}/dashboard")
    page.fill("#token", ALICE)
    page.click("#token-form button")
    page.wait_for_selector(mine)
    page.wait_for_selector("#no-overview:not([hidden])")
    assert page.is_hidden("#overview")
    assert page.locator("#usage tbody tr").count() == 1  # not ops' row
    assert page.inner_text(f"{mine} td.running") == "—"
    assert all("401" in e or "403" in e for e in page.errors), page.errors
