"""Keys on real processes: `jobsvc keys` on the database, `jobsvc api` with its default
``JOBSVC_AUTH`` (keys), the `jobsvc` client with ``--token`` / ``JOBSVC_TOKEN``, a
revocation within the key cache's bound, and no token in any log line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import trio

from tests.fixtures.images import ImageServer
from tests.fixtures.processes import Spawn, service_env, start_api
from tests.helpers import enqueue_body, until

#: jobsvc.api.auth.CACHE_SECONDS: how long a revoked key may still be accepted.
REVOCATION_BOUND = 5.0


def jobsvc(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobsvc.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_keys_cli_api_and_client_with_keys_on_and_no_token_in_any_log(
    database_url: str, spawn: Spawn, tmp_path: Path, image_server: ImageServer
) -> None:
    env = service_env(database_url, f"file://{tmp_path / 'results'}", JOBSVC_LOG_LEVEL="DEBUG")
    del env["JOBSVC_AUTH"]  # `jobsvc api`'s default: keys
    outputs: list[str] = []

    def create(*args: str) -> str:
        done = jobsvc("keys", "create", *args, env=env)
        assert done.returncode == 0, done.stderr
        token = done.stdout.strip()
        assert done.stdout == token + "\n"  # the token alone on stdout
        assert token.startswith("jobsvc_") and len(token) >= 7 + 43  # 256 random bits, url-safe
        outputs.append(done.stderr)
        return token

    acme = create("--tenant", "acme", "--label", "acme ci")
    reader = create("--tenant", "acme", "--scopes", "read")
    admin = create("--tenant", "ops", "--admin")
    tokens = [acme, reader, admin]

    api = await start_api(spawn, {**env, "JOBSVC_PORT": "0", "JOBSVC_VERIFY_ON_ENQUEUE": "false"})
    img = image_server.url("/png/a.png")
    job = str(uuid.uuid4())
    async with api.client() as http:
        refused = await http.get("/results/list")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert set(refused.json()) == {"error"}
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/openapi.json")).status_code == 200
        body = enqueue_body(img, job)
        enq = await http.post("/results/enqueue", json=body, headers={"Authorization": f"Bearer {reader}"})
        assert enq.status_code == 403
        enq = await http.post("/results/enqueue", json=body, headers={"Authorization": f"Bearer {acme}"})
        assert enq.status_code == 202 and enq.json()["tenant"] == "acme"
        metrics = (await http.get("/metrics")).text
        assert not any(t in metrics for t in tokens)

    # The client commands send --token or JOBSVC_TOKEN.
    client_env = {**env}
    without = jobsvc("list", "--url", api.url, "--job-id", job, env=client_env)
    assert without.returncode != 0 and "401" in without.stderr + without.stdout
    with_flag = jobsvc("list", "--url", api.url, "--job-id", job, "--token", reader, env=client_env)
    assert with_flag.returncode == 0 and job in with_flag.stdout, with_flag.stderr
    with_env = jobsvc("list", "--url", api.url, env={**client_env, "JOBSVC_TOKEN": admin})
    assert with_env.returncode == 0 and job in with_env.stdout, with_env.stderr
    outputs += [without.stdout, without.stderr, with_flag.stdout, with_flag.stderr, with_env.stdout]

    listed = jobsvc("keys", "list", env=env)
    assert listed.returncode == 0 and "acme ci" in listed.stdout and "admin" in listed.stdout
    outputs.append(listed.stdout)

    # Revocation: refused within the key cache's bound (5 s), measured.
    async with api.client() as http:
        headers = {"Authorization": f"Bearer {reader}"}
        assert (await http.get("/results/list", headers=headers)).status_code == 200  # cached now
        key_id = next(line.split()[0] for line in listed.stdout.splitlines() if " read " in f" {line} ")
        revoked = jobsvc("keys", "revoke", key_id, env=env)
        assert revoked.returncode == 0, revoked.stderr
        began = time.monotonic()

        async def refused_now() -> bool:
            return (await http.get("/results/list", headers=headers)).status_code == 401

        await until(refused_now, timeout=REVOCATION_BOUND + 2, what="the key to be refused", interval=0.1)
        took = time.monotonic() - began
        print(f"revocation took effect after {took:.2f}s")
        assert took <= REVOCATION_BOUND + 0.5, took
        still = await http.get("/results/list", headers={"Authorization": f"Bearer {acme}"})
        assert still.status_code == 200

    api.proc.signal(signal.SIGTERM)
    assert await trio.to_thread.run_sync(api.proc.wait, 30) == 0
    log = api.proc.output()
    assert "listening on" in log
    # Written at shutdown at the latest: the keys used have a last-used time now.
    after = jobsvc("keys", "list", env=env).stdout
    assert sum(1 for line in after.splitlines()[1:] if line.split()[5] != "-") >= 2, after
    for token in tokens:
        assert token not in log, "a token is in the API's log"
        for text in outputs:
            assert token not in text, "a token is in a command's output"


def test_keys_create_refuses_bad_input_with_a_sentence(database_url: str, tmp_path: Path) -> None:
    env = service_env(database_url, f"file://{tmp_path}")
    for args, expected in (
        (["--tenant", "no spaces"], "a tenant is 1 to 64 letters"),
        (["--tenant", "acme", "--scopes", "read,write"], "unknown scope 'write'"),
        (["--tenant", "acme", "--scopes", "read", "--admin"], "not allowed with argument"),
    ):
        done = jobsvc("keys", "create", *args, env=env)
        assert done.returncode == 2 and expected in done.stderr and not done.stdout, done.stderr
    missing = jobsvc("keys", "revoke", "12345", env=env)
    assert missing.returncode == 1 and "there is no key 12345" in missing.stderr
