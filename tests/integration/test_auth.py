"""API keys, scopes and tenants (README, "Security"), on the real app and PostgreSQL.

Keys are created in the test's database as `jobsvc keys create` does. The key cache
is off here (``key_cache_seconds=0``) unless a test measures it, so a revocation is
seen at once; tests/integration/test_auth_processes.py checks the 5 s bound on a
real `jobsvc api` process.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import psycopg
import pytest
import trio

from jobsvc import keys
from jobsvc.api.auth import Decision, decision_for
from tests.fixtures.app import Api, OpenApi
from tests.helpers import enqueue_body, until
from tests.integration.test_events import subscribe

Conn = psycopg.Connection[dict[str, Any]]
ALL = "enqueue,read,cancel"


def make_key(conn: Conn, tenant: str, scopes: str = ALL, label: str | None = None) -> tuple[int, str]:
    """A key as `jobsvc keys create` makes it: (id, token)."""
    key, token = keys.create_key(conn, tenant, keys.parse_scopes([scopes]), label)
    return key.id, token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def open_keyed(open_api: OpenApi) -> Callable[..., AbstractAsyncContextManager[Api]]:
    def start(**options: Any) -> AbstractAsyncContextManager[Api]:
        return open_api(auth="keys", app_options={"key_cache_seconds": 0, **options})

    return start


@pytest.fixture
async def keyed(open_keyed: Callable[..., AbstractAsyncContextManager[Api]]) -> AsyncIterator[Api]:
    async with open_keyed() as api:
        yield api


def job_body(job_id: uuid.UUID | str, name: str = "a.png") -> dict[str, Any]:
    return enqueue_body(f"http://images.test/{name}", str(job_id))


async def assert_unauthorized(response: Any) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.headers["Content-Type"] == "application/json"
    body = await response.get_json()
    assert set(body) == {"error"} and body["error"]


def concrete(rule: str) -> str:
    """A path of ``rule`` with its parameters filled in."""
    values = {"jobId": str(uuid.uuid4()), "resultFile": "a.png", "name": "dashboard.js"}
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values.get(m.group(1), "x"), rule)


# --- the route table -------------------------------------------------------------------


async def test_every_route_has_a_decision_and_none_but_the_public_answers_without_a_token(
    keyed: Api,
) -> None:
    public = set()
    async with keyed.app.app_context():
        decisions: dict[str, Decision | None] = {
            rule.endpoint: decision_for(rule.endpoint, strict=True) for rule in keyed.app.url_map.iter_rules()
        }
    undecided = sorted(endpoint for endpoint, decision in decisions.items() if decision is None)
    assert not undecided, f"routes without an auth decision (public / requires): {undecided}"
    for rule in keyed.app.url_map.iter_rules():
        decision = decisions[rule.endpoint]
        assert decision is not None
        for method in sorted((rule.methods or set()) - {"OPTIONS"}):
            path = concrete(rule.rule)
            response = await keyed.client.open(path, method=method)
            if decision.public:
                public.add(rule.rule)
                assert response.status_code != 401, (method, path)
            else:
                await assert_unauthorized(response)
    assert public == {
        "/healthz", "/readyz", "/metrics", "/openapi.json", "/", "/dashboard", "/dashboard/<name>",
        "/docs", "/docs/<name>", "/static/<path:filename>",
    }  # fmt: skip


async def test_missing_malformed_unknown_and_revoked_tokens_are_401(keyed: Api, conn: Conn) -> None:
    key_id, token = make_key(conn, "acme")
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": f"Basic {token}"},
        {"Authorization": "Bearer"},
        bearer("jobsvc_" + "x" * 43),
        bearer(token + "x"),
        bearer("y" * 600),
    ):
        response = await keyed.client.get("/results/list", headers=headers)
        await assert_unauthorized(response)
        assert token not in (await response.get_data(as_text=True))
    assert (await keyed.client.get("/results/list", headers=bearer(token))).status_code == 200
    lower = {"authorization": f"bearer {token}"}  # the scheme is case-insensitive (RFC 7235)
    assert (await keyed.client.get("/results/list", headers=lower)).status_code == 200

    with conn.transaction():
        keys.revoke_key(conn, key_id)
    refused = await keyed.client.get("/results/list", headers=bearer(token))
    await assert_unauthorized(refused)
    assert (await refused.get_json())["error"] == "the API key is unknown or revoked"


async def test_a_key_without_the_routes_scope_is_403(keyed: Api, conn: Conn) -> None:
    _, reader = make_key(conn, "acme", "read")
    _, writer = make_key(conn, "acme", "enqueue")
    _, canceler = make_key(conn, "acme", "cancel")
    job = uuid.uuid4()
    refused = await keyed.client.post("/results/enqueue", json=job_body(job), headers=bearer(reader))
    assert refused.status_code == 403
    assert await refused.get_json() == {"error": "this API key lacks the enqueue scope"}
    made = await keyed.client.post("/results/enqueue", json=job_body(job), headers=bearer(writer))
    assert made.status_code == 202
    reads = ("/results/list", f"/results/{job}", f"/results/{job}/a.png", "/results/events", "/results/stats")
    for path in reads:
        assert (await keyed.client.get(path, headers=bearer(canceler))).status_code == 403, path
        assert (await keyed.client.get(path, headers=bearer(writer))).status_code == 403, path
    assert (await keyed.client.post(f"/results/{job}/cancel", headers=bearer(reader))).status_code == 403
    assert (await keyed.client.post(f"/results/{job}/cancel", headers=bearer(canceler))).status_code == 200
    assert (await keyed.client.get(f"/results/{job}", headers=bearer(reader))).status_code == 200


async def test_whoami_tells_the_tenant_and_what_the_token_reads(keyed: Api, conn: Conn) -> None:
    _, token = make_key(conn, "acme", "read,enqueue")
    _, admin = make_key(conn, "ops", "admin")
    me = await (await keyed.client.get("/auth/whoami", headers=bearer(token))).get_json()
    assert me == {"tenant": "acme", "scopes": ["enqueue", "read"], "readsTenants": ["acme"]}
    boss = await (await keyed.client.get("/auth/whoami", headers=bearer(admin))).get_json()
    assert boss == {"tenant": "ops", "scopes": ["admin"], "readsTenants": None}
    await assert_unauthorized(await keyed.client.get("/auth/whoami"))


async def test_with_auth_off_every_request_acts_as_tenant_default_with_every_scope(api: Api) -> None:
    assert api.settings.auth == "off"
    me = await (await api.client.get("/auth/whoami")).get_json()
    assert me == {"tenant": "default", "scopes": ["admin", "cancel", "enqueue", "read"], "readsTenants": None}
    created = await api.client.post("/results/enqueue", json=job_body(uuid.uuid4()))
    assert created.status_code == 202 and (await created.get_json())["tenant"] == "default"


# --- tenants ---------------------------------------------------------------------------


async def test_tenants_are_isolated_in_list_get_cancel_download_and_stats(keyed: Api, conn: Conn) -> None:
    _, a = make_key(conn, "acme")
    _, b = make_key(conn, "bravo")
    _, admin = make_key(conn, "ops", "admin")
    ja, jb = uuid.uuid4(), uuid.uuid4()
    made_a = await keyed.client.post("/results/enqueue", json=job_body(ja), headers=bearer(a))
    made_b = await keyed.client.post("/results/enqueue", json=job_body(jb), headers=bearer(b))
    assert (await made_a.get_json())["tenant"] == "acme" and (await made_b.get_json())["tenant"] == "bravo"

    async def ids(token: str, query: str = "") -> set[str]:
        response = await keyed.client.get(f"/results/list{query}", headers=bearer(token))
        assert response.status_code == 200
        return {view["jobId"] for view in await response.get_json()}

    assert await ids(a) == {str(ja)}
    assert await ids(b) == {str(jb)}
    assert await ids(a, f"?jobId={jb}") == set()
    assert await ids(admin) == {str(ja), str(jb)}
    assert await ids(admin, "?tenant=bravo") == {str(jb)}
    assert await ids(a, "?tenant=acme") == {str(ja)}
    other = await keyed.client.get("/results/list?tenant=bravo", headers=bearer(a))
    assert other.status_code == 403

    # Another tenant's job answers exactly as a job that does not exist.
    unknown = uuid.uuid4()
    by_id = (
        ("GET", "/results/{}"),
        ("POST", "/results/{}/cancel"),
        ("POST", "/results/{}/retry"),
        ("GET", "/results/{}/a.png"),
    )
    for method, path in by_id:
        theirs = await keyed.client.open(path.format(jb), method=method, headers=bearer(a))
        nobody = await keyed.client.open(path.format(unknown), method=method, headers=bearer(a))
        assert theirs.status_code == nobody.status_code == 404, path
        assert (await theirs.get_json())["error"] == (await nobody.get_json())["error"].replace(
            str(unknown), str(jb)
        ), path
    # ... and A's cancel did nothing to B's job.
    (view,) = await (await keyed.client.get(f"/results/{jb}", headers=bearer(b))).get_json()
    assert view["status"] == "Queued" and not view["cancelRequested"]
    assert (await keyed.client.get(f"/results/{jb}", headers=bearer(admin))).status_code == 200
    assert (await keyed.client.post(f"/results/{jb}/cancel", headers=bearer(admin))).status_code == 200
    # A's retry of B's (now Canceled) job is a 404 and leaves it Canceled.
    assert (await keyed.client.post(f"/results/{jb}/retry", headers=bearer(a))).status_code == 404
    (view,) = await (await keyed.client.get(f"/results/{jb}", headers=bearer(b))).get_json()
    assert view["status"] == "Canceled"

    async def queued(token: str, query: str = "") -> dict[str, int]:
        body = await (await keyed.client.get(f"/results/stats{query}", headers=bearer(token))).get_json()
        return {k: v for k, v in body["counts"].items() if v}

    assert await queued(a) == {"Queued": 1}
    assert await queued(b) == {"Canceled": 1}
    assert await queued(admin) == {"Queued": 1, "Canceled": 1}
    assert await queued(admin, "?tenant=acme") == {"Queued": 1}


async def test_a_jobid_stays_unique_across_tenants(keyed: Api, conn: Conn) -> None:
    _, a = make_key(conn, "acme")
    _, b = make_key(conn, "bravo")
    job = uuid.uuid4()
    made = await keyed.client.post("/results/enqueue", json=job_body(job), headers=bearer(a))
    assert made.status_code == 202
    for name in ("a.png", "b.png"):  # the same result, and another result of the same job
        taken = await keyed.client.post("/results/enqueue", json=job_body(job, name), headers=bearer(b))
        assert taken.status_code == 409, name
        assert await taken.get_json() == {"error": f"jobId {job} is taken: choose another jobId"}
    # ... in a batch too, item by item; B's other items go in as B's.
    other = uuid.uuid4()
    body = {"jobs": [job_body(job, "b.png"), job_body(other)]}
    answer = await (await keyed.client.post("/results/batch", json=body, headers=bearer(b))).get_json()
    assert [r["status"] for r in answer["results"]] == [409, 202]
    assert "taken" in answer["results"][0]["error"] and answer["results"][1]["job"]["tenant"] == "bravo"
    (view,) = await (await keyed.client.get(f"/results/{job}", headers=bearer(a))).get_json()
    assert view["tenant"] == "acme"
    rows = conn.execute("SELECT tenant FROM jobsvc_results WHERE job_id = %s", (job,)).fetchall()
    assert rows == [{"tenant": "acme"}]


async def test_event_streams_carry_only_their_tenants_results(keyed: Api, conn: Conn) -> None:
    _, a = make_key(conn, "acme")
    _, b = make_key(conn, "bravo")
    _, admin = make_key(conn, "ops", "admin")
    ja, jb = uuid.uuid4(), uuid.uuid4()
    async with (
        subscribe(keyed, headers=bearer(a)) as stream_a,
        subscribe(keyed, headers=bearer(b)) as stream_b,
        subscribe(keyed, headers=bearer(admin)) as stream_admin,
        subscribe(keyed, f"?jobId={jb}", headers=bearer(a)) as a_spying_on_b,
    ):
        # B's job first: had it leaked into A's stream, its events would come first.
        for job, token in ((jb, b), (ja, a)):
            made = await keyed.client.post("/results/enqueue", json=job_body(job), headers=bearer(token))
            assert made.status_code == 202
        with trio.fail_after(10):
            # Each state is read once announced (a later state may replace an unread one):
            # wait for the Queued events before the cancels.
            seen_a = [await stream_a.next_event()]
            seen_b = [await stream_b.next_event()]
            for job, token in ((jb, b), (ja, a)):
                canceled = await keyed.client.post(f"/results/{job}/cancel", headers=bearer(token))
                assert canceled.status_code == 200
            seen_a.append(await stream_a.next_event())
            seen_b.append(await stream_b.next_event())
            seen_admin: set[tuple[str, str]] = set()
            while {(str(ja), "Canceled"), (str(jb), "Canceled")} - seen_admin:
                event = await stream_admin.next_event()
                seen_admin.add((event["jobId"], event["status"]))
        assert [(e["jobId"], e["status"]) for e in seen_a] == [(str(ja), "Queued"), (str(ja), "Canceled")]
        assert [(e["jobId"], e["status"]) for e in seen_b] == [(str(jb), "Queued"), (str(jb), "Canceled")]
        assert {job for job, _ in seen_admin} == {str(ja), str(jb)}
        # A's stream filtered on B's job got nothing (not even the snapshot): only heartbeats, if any.
        with trio.move_on_after(0.3):
            message = await a_spying_on_b.next()
            assert "event" not in message
    other = await keyed.client.get("/results/events?tenant=bravo", headers=bearer(a))
    assert other.status_code == 403


# --- the key cache and last-used times --------------------------------------------------


async def test_lookups_are_cached_and_last_used_is_written_in_batches(
    open_keyed: Callable[..., AbstractAsyncContextManager[Api]], conn: Conn
) -> None:
    key_id, token = make_key(conn, "acme")
    async with open_keyed(key_cache_seconds=60, key_flush_interval=0.2) as api:
        began = trio.current_time()
        for _ in range(50):
            assert (await api.client.get("/results/list", headers=bearer(token))).status_code == 200
        authenticator = api.services.authenticator
        assert authenticator.lookups == 1  # one database lookup for 50 requests

        def used() -> Any:
            row = conn.execute("SELECT last_used_at FROM jobsvc_keys WHERE id = %s", (key_id,)).fetchone()
            return row and row["last_used_at"]

        await until(used, timeout=5, what="last_used_at to be written", thread=True)
        # At most one write per interval (none while no key is used), not one per request.
        elapsed = trio.current_time() - began
        assert 1 <= authenticator.flushes <= elapsed / 0.2 + 1 and authenticator.flushes < 50
