"""Hostile paths and URLs through the real app (issue: hostile review of the landed service).

Path parameters are validated like enqueue's (400/404 JSON, never a 500), what
an error echoes is bounded, enqueue's probe is no DNS oracle, and whatever a
client puts in a path cannot forge a line of the text log.
"""

from __future__ import annotations

import io
import logging
import re
import uuid
from urllib.parse import quote

import pytest

from jobsvc import logs
from jobsvc.api import create_app
from jobsvc.config import Settings
from tests.fixtures.app import Api, OpenApi, error_of
from tests.fixtures.images import ImageServer
from tests.helpers import enqueue_body

FORGED = "\n2099-01-01 00:00:00,000 CRITICAL jobsvc.api: FORGED LINE"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("a\x00b", "control characters"),
        ("\x00" + FORGED, "control characters"),
        ("x\u202egnp.png", "control characters"),
        (" x.png", "whitespace"),
        ("x" * 5000, "longer than 255 bytes"),
    ],
    ids=["nul", "forged-log-line", "rtl-override", "leading-space", "5000-chars"],
)
async def test_download_refuses_a_result_file_enqueue_would_refuse(api: Api, name: str, says: str) -> None:
    response = await api.client.get(f"/results/{uuid.uuid4()}/{quote(name, safe='')}")
    error = await error_of(response, 400)
    assert says in error and len(error) < 200


async def test_a_404_echoes_a_bounded_name_and_path(api: Api) -> None:
    job_id = uuid.uuid4()
    long_name = "n" * 250  # a valid name: 250 bytes
    missing = await error_of(await api.client.get(f"/results/{job_id}/{long_name}"), 404)
    assert missing == f"job {job_id} has no result named '{'n' * 80}…'"
    nowhere = await error_of(await api.client.get("/nowhere/" + "p" * 5000), 404)
    assert nowhere == f"there is no resource at '/nowhere/{'p' * 71}…'"
    wrong = await error_of(await api.client.delete("/results/list"), 405)
    assert wrong.startswith("DELETE is not allowed on '/results/list'")


@pytest.mark.parametrize("verify", [False, True], ids=["no-probe", "probe"])
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://xn--zz.invalid/a.png", "not a valid internationalized domain name"),
        ("http://a..b/a.png", "empty label"),
        ("http://" + "a" * 64 + ".test/a.png", "longer than 63"),
    ],
)
async def test_enqueue_of_a_host_no_fetch_could_reach_is_400(
    open_api: OpenApi, verify: bool, url: str, says: str
) -> None:
    async with open_api(verify_on_enqueue=verify) as api:
        response = await api.client.post("/results/enqueue", json=enqueue_body(url))
        assert says in await error_of(response, 400)


async def test_enqueue_does_not_tell_what_a_refused_name_resolves_to(
    open_api: OpenApi, image_server: ImageServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_api(verify_on_enqueue=True, allow_private_urls=False) as api:
        url = f"http://localhost:{image_server.port}/img/{uuid.uuid4().hex}.png"
        body = enqueue_body(url)
        with caplog.at_level(logging.WARNING, logger="jobsvc.fetch"):
            error = await error_of(await api.client.post("/results/enqueue", json=body), 400)
    assert error == "imgUrl is not a reachable image: localhost resolves to an address that is not allowed"
    assert any("localhost" in r.getMessage() and "127.0.0.1" in r.getMessage() for r in caplog.records)


async def test_an_unexpected_error_on_a_hostile_path_cannot_forge_a_log_line(api_settings: Settings) -> None:
    """Whatever call site logs client text, the text formatter keeps it on its record's line."""
    app = create_app(api_settings)

    @app.get("/boom/<part>")
    async def boom(part: str) -> str:
        raise RuntimeError(f"cannot handle {part}")

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter())
    api_log = logging.getLogger("jobsvc.api")
    api_log.addHandler(handler)
    try:
        async with app.test_app() as test_app:
            response = await test_app.test_client().get("/boom/" + quote("x\x00" + FORGED, safe=""))
    finally:
        api_log.removeHandler(handler)
    await error_of(response, 500)
    lines = stream.getvalue().splitlines()
    records = [line for line in lines if not line.startswith(" ")]
    assert len(records) == 1 and "unhandled error on GET /boom/x\\x00\\n2099-01-01" in records[0]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR +jobsvc\.api: ", records[0])
    assert all(line.isprintable() for line in lines)
