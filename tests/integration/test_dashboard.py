"""The dashboard's server side (DESIGN §10) through the real app: the redirect, the pages and
their assets served from the package, /docs offline, GET /results/stats, and the list's
newest-first order the dashboard reads. The page itself is tested in a browser
(tests/browser/)."""

from __future__ import annotations

import re
import uuid

import pytest

from jobsvc.schemas import StatsBody
from tests.fixtures.app import Api, OpenApi


def local_references(html: str) -> list[str]:
    """Every src/href of a page; the test fails on any that leaves the service."""
    refs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    for ref in refs:
        assert ref.startswith(("/", "data:")) and not ref.startswith("//"), f"off-service reference {ref!r}"
    return [r for r in refs if r.startswith("/")]


async def test_root_redirects_to_the_dashboard(api: Api) -> None:
    response = await api.client.get("/")
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard"


async def test_dashboard_page_and_assets_are_served_from_the_package(api: Api) -> None:
    page = await api.client.get("/dashboard")
    html = await page.get_data(as_text=True)
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    assert html.lower().startswith("<!doctype html>")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
    for hook in ('data-count="Queued"', 'name="token"', 'data-action="login"', 'data-action="cancel"'):
        assert hook in html
    refs = local_references(html)
    assert "/dashboard/dashboard.js" in refs and "/dashboard/dashboard.css" in refs
    for ref in refs:
        if ref.startswith("/dashboard/"):
            asset = await api.client.get(ref)
            assert asset.status_code == 200 and await asset.get_data(), ref
    script = await (await api.client.get("/dashboard/dashboard.js")).get_data(as_text=True)
    # The SVG namespace is a name, not a request; nothing else may point off the service.
    assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg\b)", script)
    assert "new EventSource" not in script  # it could not send the Authorization header


@pytest.mark.parametrize("auth", ["keys", "off"])
async def test_dashboard_page_says_whether_the_service_asks_for_a_token(open_api: OpenApi, auth: str) -> None:
    """The page asks for a token before any request only when the service wants one."""
    async with open_api(auth=auth) as api:
        html = await (await api.client.get("/dashboard")).get_data(as_text=True)
    assert re.findall(r'<meta name="jobsvc-auth" content="(\w+)">', html) == [auth]


@pytest.mark.parametrize("name", ["index.html", "..%2Fdashboard.py", "nope.js", "docs.html"])
async def test_dashboard_serves_only_its_listed_assets(api: Api, name: str) -> None:
    response = await api.client.get(f"/dashboard/{name}")
    assert response.status_code == 404 and (await response.get_json())["error"]


async def test_docs_is_a_doctype_page_whose_assets_are_all_local(api: Api) -> None:
    page = await api.client.get("/docs")
    html = await page.get_data(as_text=True)
    assert page.status_code == 200 and html.lower().startswith("<!doctype html>")
    refs = local_references(html)
    assert {"/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/docs.js"} <= set(refs)
    sizes = {}
    for ref in refs:
        if not ref.startswith("/docs/"):
            continue
        asset = await api.client.get(ref)
        sizes[ref] = len(await asset.get_data())
        assert asset.status_code == 200, ref
    assert sizes["/docs/swagger-ui-bundle.js"] > 500_000  # the real Swagger UI, not a stub
    init = await (await api.client.get("/docs/docs.js")).get_data(as_text=True)
    assert '"/openapi.json"' in init and "validatorUrl: null" in init
    assert (await api.client.get("/docs/oauth2-redirect.html")).status_code == 404


async def test_stats_counts_every_row_by_status_and_the_oldest_queued_age(api: Api) -> None:
    empty = await (await api.client.get("/results/stats")).get_json()
    assert empty == {
        "counts": {"Queued": 0, "Processing": 0, "Completed": 0, "Failed": 0, "Canceled": 0},
        "queueDepth": 0,
        "oldestQueuedAgeMs": None,
    }
    views = [await api.enqueue() for _ in range(3)]
    assert (await api.client.post(f"/results/{views[0]['jobId']}/cancel")).status_code == 200
    response = await api.client.get("/results/stats")
    stats = await response.get_json()
    StatsBody.model_validate(stats)
    assert response.headers["Cache-Control"] == "no-store"
    assert stats["counts"]["Queued"] == 2 and stats["counts"]["Canceled"] == 1
    assert stats["queueDepth"] == 2 and stats["oldestQueuedAgeMs"] >= 0


async def test_stats_is_documented_in_openapi(api: Api) -> None:
    doc = await (await api.client.get("/openapi.json")).get_json()
    responses = doc["paths"]["/results/stats"]["get"]["responses"]
    assert {"200", "401", "403", "500", "503"} == set(responses)
    for hidden in ("/", "/dashboard", "/docs"):
        assert hidden not in doc["paths"]


async def test_list_newest_first_pages_with_the_cursor(api: Api) -> None:
    created = [(await api.enqueue())["jobId"] for _ in range(5)]
    seen: list[str] = []
    url: str | None = "/results/list?order=desc&limit=2"
    while url is not None:
        response = await api.client.get(url)
        assert response.status_code == 200
        seen += [v["jobId"] for v in await response.get_json()]
        link = response.headers.get("Link")
        url = None if link is None else link[1 : link.index(">")]
        assert url is None or "order=desc" in url
    assert seen == created[::-1]
    oldest_first = await (await api.client.get("/results/list?order=asc")).get_json()
    assert [v["jobId"] for v in oldest_first] == created


async def test_list_newest_first_keeps_the_filters(api: Api) -> None:
    job = str(uuid.uuid4())
    for name in ("1.png", "2.png", "3.png"):
        await api.enqueue(f"http://images.test/{name}", job)
    await api.enqueue()
    views = await (await api.client.get(f"/results/list?order=desc&jobId={job}")).get_json()
    assert [v["resultFile"] for v in views] == ["3.png", "2.png", "1.png"]


async def test_list_order_must_be_asc_or_desc(api: Api) -> None:
    response = await api.client.get("/results/list?order=newest")
    assert response.status_code == 400 and "order" in (await response.get_json())["error"]
