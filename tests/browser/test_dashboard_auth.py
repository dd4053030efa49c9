"""The dashboard's token prompt against a real keyed stack (DESIGN §8, §10).

``jobsvc api`` and ``jobsvc worker`` run with ``JOBSVC_AUTH=keys``; keys are made on
the stack's database as ``jobsvc keys create`` makes them. Two tenants each own one
result (scheduled for 2100, so it stays Queued and the counts are exact). Every test
runs under the `guarded` page (a request off the service or a console error fails
it) and records every request the page makes, with its Authorization header.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from jobsvc import keys
from tests.browser.conftest import Guard
from tests.fixtures.processes import Stack, open_stack
from tests.helpers import enqueue_body

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request, Route

LATER = 4_102_444_800_000  # 2100-01-01: a result that stays Queued
#: Chromium's console line for a response it was given with status 401.
REFUSED_LINE = r"status of 401"


@dataclass(frozen=True)
class Tokens:
    acme: str
    globex: str
    admin: str


@dataclass
class Seen:
    """Every service request the page made: (url, Authorization header or None)."""

    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def record(self, route: Route, request: Request) -> bool:
        self.requests.append((request.url, request.headers.get("authorization")))
        return False  # passed on to the service

    def api_paths(self, stack: Stack) -> set[str]:
        return {urlsplit(url).path for url, _ in self.requests if not _is_page_file(url)}

    def assert_token_never_in_a_url(self, *tokens: str) -> None:
        for url, _ in self.requests:
            for token in tokens:
                assert token not in unquote(url), f"a token went into a URL: {url}"

    def assert_api_requests_carry(self, stack: Stack, token: str) -> None:
        """Every request for data, from the first one made with this token, sent it as a header."""
        data = [(url, auth) for url, auth in self.requests if not _is_page_file(url)]
        first = next(i for i, (_, auth) in enumerate(data) if auth == f"Bearer {token}")
        assert all(auth == f"Bearer {token}" for _, auth in data[first:]), data[first:]


def _is_page_file(url: str) -> bool:
    path = urlsplit(url).path
    return path in {"/", "/dashboard"} or path.startswith("/dashboard/")


@pytest.fixture(scope="module")
def stack(
    chromium: Browser, stack_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """This module's stack asks for keys (it replaces conftest's `stack`, auth off)."""
    env = {"JOBSVC_AUTH": "keys", "JOBSVC_VERIFY_ON_ENQUEUE": "false", "JOBSVC_SHUTDOWN_GRACE": "2"}
    with open_stack(stack_database_url, tmp_path_factory.mktemp("browser-auth"), **env) as started:
        yield started


@pytest.fixture(scope="module")
def tokens(stack_database_url: str) -> Tokens:
    every = keys.parse_scopes(["enqueue,read,cancel"])
    with psycopg.connect(stack_database_url, row_factory=dict_row, autocommit=True) as conn:
        made = {
            name: keys.create_key(conn, tenant, scopes, label="browser test")[1]
            for name, tenant, scopes in (
                ("acme", "acme", every),
                ("globex", "globex", every),
                ("admin", "ops", keys.parse_scopes(["admin"])),
            )
        }
    return Tokens(**made)


def enqueue_as(stack: Stack, token: str, name: str) -> str:
    """One result of the token's tenant, scheduled for 2100; returns its jobId."""
    job_id = str(uuid.uuid4())
    response = httpx.post(
        f"{stack.url}/results/enqueue",
        json=enqueue_body(f"http://images.test/{name}", job_id, runAt=LATER),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return job_id


@pytest.fixture(scope="module")
def jobs(stack: Stack, tokens: Tokens) -> dict[str, str]:
    """One Queued result per tenant: tenant -> jobId."""
    return {
        "acme": enqueue_as(stack, tokens.acme, "acme.png"),
        "globex": enqueue_as(stack, tokens.globex, "globex.png"),
    }


def counts_as(stack: Stack, token: str) -> dict[str, Any]:
    response = httpx.get(
        f"{stack.url}/results/stats", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    response.raise_for_status()
    counts: dict[str, Any] = response.json()["counts"]
    return counts


@pytest.fixture
def seen(guarded: tuple[Page, Guard]) -> Seen:
    recorder = Seen()
    guarded[1].answer = recorder.record
    return recorder


def log_in(page: Page, token: str) -> None:
    page.locator('input[name="token"]').fill(token)
    page.locator('button[data-action="login"]').click()


def job_row(job_id: str) -> str:
    return f'#rows tr[data-job-id="{job_id}"]'


def expect_counts(page: Page, counts: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    for status, n in counts.items():
        expect(page.locator(f'[data-count="{status}"]')).to_have_text(str(n))


def test_the_page_asks_for_a_token_and_refuses_a_wrong_one_visibly(
    guarded: tuple[Page, Guard], seen: Seen, stack: Stack, jobs: dict[str, str]
) -> None:
    from playwright.sync_api import expect

    page, guard = guarded
    guard.allow_console(REFUSED_LINE)  # the service's answer to the wrong token
    page.goto("/")
    prompt = page.locator('input[name="token"]')
    expect(prompt).to_be_visible()
    expect(page.locator("#login-reason")).to_have_text(re.compile("asks for a token"))
    expect(page.locator("#main")).to_be_hidden()

    wrong = f"jobsvc_{uuid.uuid4().hex}"
    log_in(page, wrong)
    expect(page.locator("#login-reason")).to_contain_text("refused")
    expect(page.locator("#login-reason")).to_be_visible()
    expect(prompt).to_be_visible()
    expect(page.locator("#main")).to_be_hidden()
    expect(page.locator("[data-identity]")).to_have_text("")
    assert page.locator("#rows tr").count() == 0
    # A refused token is not kept: a reload asks again instead of sending it again.
    assert page.evaluate("sessionStorage.getItem('jobsvc.token')") is None
    page.reload()
    expect(prompt).to_be_visible()
    expect(page.locator("#login-reason")).to_have_text(re.compile("asks for a token"))
    sent = [auth for _, auth in seen.requests if auth is not None]
    assert sent == [f"Bearer {wrong}"] * len(sent) and sent, sent
    seen.assert_token_never_in_a_url(wrong)
    guard.assert_clean()


def test_a_tenant_key_reads_only_its_tenant_and_keeps_its_session_over_a_reload(
    guarded: tuple[Page, Guard], seen: Seen, stack: Stack, tokens: Tokens, jobs: dict[str, str]
) -> None:
    from playwright.sync_api import expect

    page, guard = guarded
    page.goto("/dashboard")
    log_in(page, tokens.acme)
    expect(page.locator("#live")).to_have_attribute("data-live", "true")
    expect(page.locator('input[name="token"]')).to_be_hidden()
    identity = page.locator("[data-identity]")
    expect(identity).to_have_text("Tenant acme")
    expect(page.locator(job_row(jobs["acme"]))).to_have_count(1)
    expect(page.locator(job_row(jobs["globex"]))).to_have_count(0)
    expect_counts(page, counts_as(stack, tokens.acme))
    assert counts_as(stack, tokens.acme)["Queued"] < counts_as(stack, tokens.admin)["Queued"]

    # Live: another tenant's new result never reaches this page; its own does.
    other = enqueue_as(stack, tokens.globex, "live-globex.png")
    own = enqueue_as(stack, tokens.acme, "live-acme.png")
    expect(page.locator(job_row(own))).to_have_count(1)
    expect_counts(page, counts_as(stack, tokens.acme))
    assert page.locator(job_row(other)).count() == 0
    assert page.locator("#rows tr").count() == counts_as(stack, tokens.acme)["Queued"]

    page.evaluate("window.__sameDocument = true")
    page.reload()
    assert page.evaluate("window.__sameDocument") is None  # it did reload
    expect(page.locator("#live")).to_have_attribute("data-live", "true")
    expect(page.locator('input[name="token"]')).to_be_hidden()
    expect(identity).to_have_text("Tenant acme")
    expect(page.locator(job_row(own))).to_have_count(1)
    expect(page.locator(job_row(other))).to_have_count(0)
    assert page.evaluate("sessionStorage.getItem('jobsvc.token')") == tokens.acme

    assert {"/results/events", "/results/list", "/results/stats", "/auth/whoami"} <= seen.api_paths(stack)
    seen.assert_api_requests_carry(stack, tokens.acme)
    seen.assert_token_never_in_a_url(tokens.acme)
    guard.assert_clean()


def test_an_admin_key_reads_every_tenant(
    guarded: tuple[Page, Guard], seen: Seen, stack: Stack, tokens: Tokens, jobs: dict[str, str]
) -> None:
    from playwright.sync_api import expect

    page, guard = guarded
    page.goto("/dashboard")
    log_in(page, tokens.admin)
    expect(page.locator("#live")).to_have_attribute("data-live", "true")
    expect(page.locator("[data-identity]")).to_have_text("Every tenant (admin)")
    for job_id in jobs.values():
        expect(page.locator(job_row(job_id))).to_have_count(1)
    everything = counts_as(stack, tokens.admin)
    assert everything["Queued"] >= 2
    expect_counts(page, everything)

    # Forgetting the token asks again and leaves nothing of what it showed.
    page.locator("#logout").click()
    expect(page.locator('input[name="token"]')).to_be_visible()
    expect(page.locator("#main")).to_be_hidden()
    expect(page.locator("[data-identity]")).to_have_text("")
    assert page.evaluate("sessionStorage.getItem('jobsvc.token')") is None

    seen.assert_api_requests_carry(stack, tokens.admin)
    seen.assert_token_never_in_a_url(tokens.admin)
    guard.assert_clean()
