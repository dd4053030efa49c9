"""The dashboard and /docs in a real browser (DESIGN §10), against real api + worker processes.

Every test runs under the `guarded` page: a request to anything but the service is
aborted and fails the test, and so does a console error. Waits are Playwright's
auto-retrying assertions (each with a deadline), never sleeps.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from tests.browser.conftest import Guard
from tests.fixtures.images import ImageServer
from tests.fixtures.processes import Stack
from tests.helpers import until_sync

if TYPE_CHECKING:
    from playwright.sync_api import Page

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
STATUS_TIMEOUT = 20_000  # ms: a worker finishing a tiny image takes well under a second


def row(page: Page, job_id: str, result_file: str) -> str:
    return f'#rows tr[data-job-id="{job_id}"][data-result-file="{result_file}"]'


def count(page: Page, status: str) -> int:
    return int(page.locator(f'[data-count="{status}"]').inner_text())


def open_live(page: Page) -> None:
    """Open the dashboard from / and wait until its event stream is connected."""
    from playwright.sync_api import expect

    page.goto("/")
    assert page.url.endswith("/dashboard")
    expect(page.locator("#live")).to_have_attribute("data-live", "true")
    # This stack runs with JOBSVC_AUTH=off: no prompt, and the page reads every tenant
    # (tests/browser/test_dashboard_auth.py meets the prompt on a keyed stack).
    expect(page.locator('input[name="token"]')).to_be_hidden()
    expect(page.locator("[data-identity]")).to_have_text("Every tenant (admin)")
    expect(page.locator('[data-count="Queued"]')).to_have_text(re.compile(r"^\d+$"))
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads


def test_live_rows_counts_and_job_view_with_no_reload(
    guarded: tuple[Page, Guard], stack: Stack, image_server: ImageServer
) -> None:
    from playwright.sync_api import expect

    page, guard = guarded
    open_live(page)
    before = stack.stats()["counts"]["Completed"]
    loaded = len(guard.requests)
    job_id = str(uuid.uuid4())
    files = [f"live-{i}.png" for i in range(3)]
    for name in files:
        stack.enqueue(image_server.url(f"/img/{uuid.uuid4().hex}/{name}"), job_id)
    for name in files:
        expect(page.locator(f"{row(page, job_id, name)} [data-field=status]")).to_have_text(
            "Completed", timeout=STATUS_TIMEOUT
        )
    expect(page.locator('[data-count="Completed"]')).to_have_text(str(before + 3))
    # Newest first: the last enqueued result is the top row.
    assert page.locator("#rows tr").first.get_attribute("data-result-file") == files[-1]
    assert int(page.locator("#rate").inner_text()) >= 3
    assert page.evaluate("window.__sameDocument") is True
    later = guard.paths()[loaded:]
    assert "/results/list" not in later, "the page listed again instead of following events"
    assert set(later) <= {"/results/stats"}, later

    page.locator(row(page, job_id, files[0])).click()
    detail = page.locator("#detail")
    expect(detail.locator("#detail-job")).to_have_text(job_id)
    expect(detail.locator(".result")).to_have_count(3)
    first = detail.locator(f'.result[data-result-file="{files[0]}"]')
    expect(first.locator("[data-field=status]")).to_have_text("Completed")
    expect(first).to_contain_text("1 of")
    thumb = first.locator("img")
    expect(thumb).to_have_attribute("src", f"/results/{job_id}/{files[0]}")
    until_sync(
        lambda: thumb.evaluate("img => img.complete && img.naturalWidth > 0"),
        timeout=10,
        what="the thumbnail",
    )
    guard.assert_clean()


def test_counts_come_from_the_server_with_thousands_of_rows(
    guarded: tuple[Page, Guard], stack: Stack, stack_database_url: str
) -> None:
    from playwright.sync_api import expect

    page, guard = guarded
    with psycopg.connect(stack_database_url, autocommit=True) as conn:
        # Scheduled a day ahead: they stay Queued and are not due, so no worker touches them.
        conn.execute(
            """
            INSERT INTO jobsvc_results (job_id, result_file, type, img_url, run_at, max_attempts)
            SELECT gen_random_uuid(), 'bulk.png', 'bulk', 'http://images.test/bulk.png',
                   now() + interval '1 day', 3
            FROM generate_series(1, 3000)
            """
        )
    queued = stack.stats()["counts"]["Queued"]
    assert queued >= 3000
    open_live(page)
    expect(page.locator('[data-count="Queued"]')).to_have_text(str(queued))
    expect(page.locator("#rows tr")).to_have_count(100)
    assert page.locator("#shown").inner_text() == "100"
    page.locator("#filters select[name=status]").select_option("Queued")
    page.locator("#filters input[name=type]").fill("bulk")
    page.locator("#filters button[type=submit]").click()
    expect(page.locator("#rows tr")).to_have_count(100)
    statuses = page.locator("#rows [data-field=status]").all_inner_texts()
    assert set(statuses) == {"Queued"}
    assert set(page.locator("#rows [data-field=type]").all_inner_texts()) == {"bulk"}
    guard.assert_clean()


def test_cancel_from_a_row_and_from_the_job_view(
    guarded: tuple[Page, Guard], stack: Stack, image_server: ImageServer
) -> None:
    from playwright.sync_api import expect

    page, guard = guarded
    open_live(page)
    running = str(uuid.uuid4())
    stack.enqueue(image_server.url(f"/slow/{running}/slow.png"), running)
    cell = page.locator(f"{row(page, running, 'slow.png')} [data-field=status]")
    expect(cell).to_have_text("Processing", timeout=STATUS_TIMEOUT)
    page.locator(f'{row(page, running, "slow.png")} [data-action="cancel"]').click()
    expect(cell).to_have_text("Canceled", timeout=STATUS_TIMEOUT)
    expect(page.locator("#detail")).to_be_hidden()  # the button acted; the row did not open

    waiting = str(uuid.uuid4())
    run_at = 4_102_444_800_000  # 2100-01-01: it stays Queued
    stack.enqueue(image_server.url("/img/later.png"), waiting, runAt=run_at)
    later = page.locator(row(page, waiting, "later.png"))
    expect(later.locator("[data-field=status]")).to_have_text("Queued")
    later.click()
    page.locator('#detail [data-action="cancel"]').click()
    expect(page.locator("#detail .result [data-field=status]")).to_have_text("Canceled")
    expect(later.locator("[data-field=status]")).to_have_text("Canceled")
    assert [v["status"] for v in stack.views(waiting)] == ["Canceled"]
    guard.assert_clean()


def test_retry_from_the_page(guarded: tuple[Page, Guard], stack: Stack, image_server: ImageServer) -> None:
    from playwright.sync_api import expect

    page, guard = guarded
    # A retry endpoint that is missing answers 405; the page hides Retry and says why.
    guard.allow_console(r"status of 405")
    open_live(page)
    job_id = str(uuid.uuid4())
    # /flaky/ answers 503 twice per key, then a PNG: two attempts fail, a retry succeeds.
    stack.enqueue(image_server.url(f"/flaky/{job_id}/flaky.png"), job_id, maxAttempts=2)
    cell = page.locator(f"{row(page, job_id, 'flaky.png')} [data-field=status]")
    expect(cell).to_have_text("Failed", timeout=STATUS_TIMEOUT)
    button = page.locator(f'{row(page, job_id, "flaky.png")} [data-action="retry"]')
    button.click()
    expect(cell).to_have_text("Completed", timeout=STATUS_TIMEOUT)
    guard.assert_clean()


def test_requests_off_the_service_are_refused_and_reported(guarded: tuple[Page, Guard]) -> None:
    page, guard = guarded
    guard.allow_console(r"Content Security Policy|ERR_BLOCKED_BY_CLIENT|Failed to fetch")
    open_live(page)
    probe = "fetch('https://cdn.example.invalid/x.js').then(() => 'loaded', e => 'failed: ' + e.message)"
    # The dashboard's own policy refuses it before it leaves the page ...
    assert page.evaluate(probe).startswith("failed")
    assert guard.blocked == []
    # ... and on a page without that policy the test's guard catches it (so it would fail a test).
    page.goto("/docs")
    assert page.evaluate(probe).startswith("failed")
    assert guard.blocked == ["https://cdn.example.invalid/x.js"]
    guard.blocked.clear()  # proven; the fixture's own check must not fail on it


def test_docs_render_offline_from_local_files(guarded: tuple[Page, Guard], stack: Stack) -> None:
    from playwright.sync_api import expect

    page, guard = guarded
    page.goto("/docs")
    assert page.evaluate("document.doctype && document.doctype.name") == "html"
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("jobsvc")
    expect(page.locator(".opblock-summary-path", has_text="/results/enqueue")).to_have_count(1)
    assert page.locator(".opblock").count() >= 8
    assert {"/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/openapi.json"} <= set(guard.paths())
    guard.assert_clean()


@pytest.mark.skipif(
    os.environ.get("JOBSVC_SCREENSHOT") != "1", reason="JOBSVC_SCREENSHOT=1 writes docs/dashboard.png"
)
def test_screenshot_for_the_readme(
    guarded: tuple[Page, Guard], stack: Stack, image_server: ImageServer
) -> None:
    """A mix of statuses and an open job view, saved as docs/dashboard.png."""
    from playwright.sync_api import expect

    page, guard = guarded
    open_live(page)
    shown = str(uuid.uuid4())
    for name in ("front.png", "back.jpg", "side.webp"):
        stack.enqueue(image_server.url(f"/img/{uuid.uuid4().hex}/{name}"), shown)
    stack.enqueue(image_server.url(f"/html/{uuid.uuid4().hex}/page.png"))
    slow = str(uuid.uuid4())
    stack.enqueue(image_server.url(f"/slow/{slow}/huge.png"), slow)
    for _ in range(4):
        stack.enqueue(image_server.url(f"/img/{uuid.uuid4().hex}/thumb.png"))
    expect(page.locator(f"{row(page, slow, 'huge.png')} [data-field=status]")).to_have_text("Processing")
    expect(page.locator(f"{row(page, shown, 'front.png')} [data-field=status]")).to_have_text("Completed")
    page.locator(row(page, shown, "front.png")).click()
    thumbs = page.locator("#detail .result img")
    expect(thumbs).to_have_count(3, timeout=STATUS_TIMEOUT)
    for i in range(3):
        until_sync(
            lambda i=i: thumbs.nth(i).evaluate("img => img.naturalWidth > 0"), timeout=10, what="thumbnails"
        )
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    page.locator(f'{row(page, slow, "huge.png")} [data-action="cancel"]').click()
    expect(page.locator(f"{row(page, slow, 'huge.png')} [data-field=status]")).to_have_text("Canceled")
    guard.assert_clean()
