"""Browser tests: Playwright (PyPI) driving Debian's Chromium against a real stack.

- `chromium`: the system's ``/usr/bin/chromium`` (Playwright cannot download browsers
  here). Missing, the tests skip saying so; with ``JOBSVC_REQUIRE_BROWSER=1`` (set by
  ``.ci/run``) a missing browser is a failure instead.
- `stack`: ``jobsvc api`` and ``jobsvc worker`` as real processes on a migrated
  database of their own, file storage, shared by the module (a stack takes seconds
  to start); stopped with SIGTERM, and both must then exit 0.
- `page`: a fresh browser context whose every request is checked: one to anything but
  the service is aborted and recorded, and `Guard.assert_clean` fails the test on it,
  as on any console error or uncaught page error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.fixtures.database import PgServer, migrated_database
from tests.fixtures.processes import Stack, open_stack

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request, Route

CHROMIUM = Path("/usr/bin/chromium")


# --------------------------------------------------------------------------- the browser


def _missing(reason: str) -> None:
    if os.environ.get("JOBSVC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (JOBSVC_REQUIRE_BROWSER=1 makes the browser tests required)")
    pytest.skip(f"{reason}; install it (apt-get install chromium) or set JOBSVC_REQUIRE_BROWSER=1 to fail")


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed")
    if not CHROMIUM.exists():
        _missing(f"no Chromium at {CHROMIUM}")
    with sync_playwright() as started:
        yield started


@pytest.fixture(scope="session")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    yield browser
    browser.close()


@dataclass
class Guard:
    """What one page did that a test must see: requests off the service, console errors."""

    origin: str
    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    #: Console errors a test expects (e.g. Chromium's line for a 401 it asked for).
    allowed: list[re.Pattern[str]] = field(default_factory=list)
    #: A hook a test installs to answer service requests itself (None: pass them on).
    answer: Callable[[Route, Request], bool] | None = None

    def route(self, route: Route, request: Request) -> None:
        parts = urlsplit(request.url)
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.blocked.append(request.url)
            route.abort("blockedbyclient")
            return
        self.requests.append(request.url)
        if self.answer is not None and self.answer(route, request):
            return
        route.continue_()

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not any(p.search(message.text) for p in self.allowed):
            self.console_errors.append(message.text)

    def page_error(self, error: Any) -> None:
        self.console_errors.append(f"uncaught: {error}")

    def allow_console(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def paths(self) -> list[str]:
        return [urlsplit(u).path for u in self.requests]

    def assert_clean(self) -> None:
        assert self.blocked == [], f"the page asked for something off the service: {self.blocked}"
        assert self.console_errors == [], f"console errors: {self.console_errors}"


@pytest.fixture
def guarded(chromium: Browser, stack: Stack) -> Iterator[tuple[Page, Guard]]:
    guard = Guard(stack.url)
    context = chromium.new_context(base_url=stack.url, viewport={"width": 1280, "height": 800})
    context.route("**/*", guard.route)
    page = context.new_page()
    page.on("console", guard.console)
    page.on("pageerror", guard.page_error)
    page.set_default_timeout(15_000)
    yield page, guard
    context.close()
    guard.assert_clean()


# --------------------------------------------------------------------------- the stack


@pytest.fixture(scope="module")
def stack_database_url(pg_server: PgServer, template_db: str) -> Iterator[str]:
    with migrated_database(pg_server, template_db, prefix="jobsvc_browser") as url:
        yield url


@pytest.fixture(scope="module")
def stack(
    chromium: Browser, stack_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Depends on `chromium` so that a missing browser skips before any process starts."""
    env = {
        "JOBSVC_VERIFY_ON_ENQUEUE": "false",  # the tests choose URLs that fail in the worker
        "JOBSVC_SHUTDOWN_GRACE": "2",
        "JOBSVC_CONCURRENCY": "4",
    }
    with open_stack(stack_database_url, tmp_path_factory.mktemp("browser"), **env) as started:
        yield started
