"""compose.yaml, the Dockerfile and ``jobsvc --help`` agree with the CLI and the settings.

No Docker engine is needed: the files are parsed and checked against
`jobsvc.cli.build_parser` and `jobsvc.config.KNOWN_VARIABLES`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobsvc.cli import build_parser
from jobsvc.config import KNOWN_VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[2]
#: DESIGN §7: the servers and the client commands.
DESIGN_COMMANDS = ["migrate", "api", "worker", "dev", "keys", "enqueue", "list", "cancel", "watch"]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text())  # resolves anchors and << merges
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def built_here(service: dict[str, Any]) -> bool:
    build = service.get("build")
    context = build.get("context") if isinstance(build, dict) else build
    return context in (".", "./")


def jobsvc_image(services: dict[str, dict[str, Any]]) -> str:
    """The image the one service that builds ./Dockerfile tags."""
    (builder,) = (s for s in services.values() if built_here(s))
    image = builder["image"]
    assert isinstance(image, str)
    return image


def jobsvc_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    image = jobsvc_image(services)
    return {name: s for name, s in services.items() if s.get("image") == image}


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=value list form
        env = dict(item.split("=", 1) for item in env)
    return dict(env)


def seconds(duration: str) -> float:
    """A compose duration (``1m30s``, ``45s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"([0-9.]+)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


# --- compose.yaml ------------------------------------------------------------------------


def test_compose_has_the_whole_stack(services: dict[str, dict[str, Any]]) -> None:
    assert {"postgres", "minio", "minio-init", "migrate", "api", "worker"} <= set(services)
    assert set(jobsvc_services(services)) == {"migrate", "api", "worker"}


def test_compose_jobsvc_commands_are_real_subcommands(services: dict[str, dict[str, Any]]) -> None:
    known = subcommands()
    for name, service in jobsvc_services(services).items():
        command = service.get("command")
        assert isinstance(command, list) and command, f"{name}: command must be an exec-form list"
        assert command[0] in known, f"{name}: {command[0]!r} is not a jobsvc command"
        known[command[0]].parse_args(command[1:])  # its flags parse too
    assert {n: s["command"][0] for n, s in jobsvc_services(services).items()} == {
        "migrate": "migrate",
        "api": "api",
        "worker": "worker",
    }


def test_compose_sets_only_known_jobsvc_variables_and_valid_settings(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in jobsvc_services(services).items():
        env = environment(service)
        unknown = {var for var in env if var.startswith("JOBSVC_")} - KNOWN_VARIABLES
        assert not unknown, f"{name} sets variables jobsvc does not read: {sorted(unknown)}"
        others = {var for var in env if not var.startswith(("JOBSVC_", "AWS_"))}
        assert not others, f"{name} sets unexpected variables: {sorted(others)}"
        assert all(isinstance(v, str) for v in env.values()), f"{name}: quote every value"
        settings = Settings.from_env(env)  # raises ConfigError on a bad value
        assert settings.database_url and "@postgres:" in settings.database_url
        assert settings.storage_url == "s3://jobsvc-results"
        assert settings.s3_endpoint_url == "http://minio:9000"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"} <= set(env)


def test_compose_s3_credentials_match_minio(services: dict[str, dict[str, Any]]) -> None:
    minio = environment(services["minio"])
    for name, service in jobsvc_services(services).items():
        env = environment(service)
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
            minio["MINIO_ROOT_USER"],
            minio["MINIO_ROOT_PASSWORD"],
        ), name
    init = services["minio-init"]
    assert init["command"][-1] == "local/jobsvc-results"
    assert environment(init)["MC_HOST_local"] == (
        f"http://{minio['MINIO_ROOT_USER']}:{minio['MINIO_ROOT_PASSWORD']}@minio:9000"
    )


def test_compose_api_requires_keys_and_documents_the_first_keys_command(
    services: dict[str, dict[str, Any]],
) -> None:
    assert Settings.from_env(environment(services["api"])).auth == "keys"
    text = (ROOT / "compose.yaml").read_text()
    found = re.search(r"docker compose run --rm (\S+) (keys create [^\n#]+)", text)
    assert found, "compose.yaml must say how to create the first key"
    service, command = found.group(1), found.group(2).split()
    assert service in jobsvc_services(services)  # built from the Dockerfile, with the database's env
    args = build_parser().parse_args(command)  # the documented command parses
    assert args.admin and args.tenant


def test_compose_api_listens_on_all_interfaces_and_is_published_on_loopback(
    services: dict[str, dict[str, Any]],
) -> None:
    api = services["api"]
    assert environment(api)["JOBSVC_HOST"] == "0.0.0.0"  # inside the container
    # On the host: loopback only by default (publish it further behind TLS; README, Security).
    assert api["ports"] == ["127.0.0.1:8000:8000"]


def test_compose_builds_one_image_and_every_role_runs_it(services: dict[str, dict[str, Any]]) -> None:
    image = jobsvc_image(services)
    assert [name for name, s in services.items() if "build" in s] == ["migrate"]
    for name in ("api", "worker"):
        assert services[name]["image"] == image and services[name]["pull_policy"] == "never", name


def test_compose_pins_every_third_party_image(services: dict[str, dict[str, Any]]) -> None:
    image = jobsvc_image(services)
    for name, service in services.items():
        if service["image"] != image:
            _, _, tag = service["image"].rpartition(":")
            assert tag and tag != "latest" and "/" not in tag, f"{name}: {service['image']} is not pinned"
    assert services["minio"]["image"].startswith("minio/minio:RELEASE.")
    assert services["minio-init"]["image"].startswith("minio/mc:RELEASE.")


def test_compose_worker_healthcheck_asks_its_metrics_port(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    port = Settings.from_env(environment(worker)).metrics_port
    test = worker["healthcheck"]["test"]
    assert port and test[:2] == ["CMD", "python"]
    assert f"127.0.0.1:{port}/metrics" in test[-1]
    compile(test[-1], "healthcheck", "exec")
    assert "ports" not in worker
    assert services["migrate"]["healthcheck"] == {"disable": True}  # one-shot


def test_compose_api_healthcheck_uses_readyz_without_curl(services: dict[str, dict[str, Any]]) -> None:
    test = services["api"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    assert "/readyz" in test[-1] and "urllib" in test[-1]
    compile(test[-1], "healthcheck", "exec")  # the -c program is valid Python


def test_compose_worker_runs_two_replicas(services: dict[str, dict[str, Any]]) -> None:
    assert services["worker"]["deploy"]["replicas"] == 2
    assert "ports" not in services["worker"]  # replicas could not share a host port


def test_compose_order_postgres_then_migrate_then_api_and_worker(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in ("postgres", "minio"):
        assert services[name]["healthcheck"]["test"], name


def test_compose_worker_stop_grace_exceeds_shutdown_grace(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    grace = Settings.from_env(environment(worker)).shutdown_grace
    assert seconds(worker["stop_grace_period"]) > grace


def test_compose_restart_policies_are_strings(services: dict[str, dict[str, Any]]) -> None:
    # YAML 1.1 reads a bare `no` as false, which compose rejects: it must be quoted.
    for name, service in services.items():
        if "restart" in service:
            assert service["restart"] in ("no", "always", "on-failure", "unless-stopped"), name
    assert services["migrate"]["restart"] == "no"
    assert services["minio-init"]["restart"] == "no"


def test_compose_postgres_volume_uses_the_postgres_18_layout(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:18"
    volume, _, target = postgres["volumes"][0].partition(":")
    assert target == "/var/lib/postgresql"  # 18+ keeps PGDATA in a versioned subdirectory
    assert volume in compose["volumes"]


# --- Dockerfile --------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """The instructions, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.strip().partition(" ") for line in joined.splitlines() if line.strip())
    ]


def dockerignore() -> set[str]:
    lines = (line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def instructions(name: str) -> list[str]:
    return [args for word, args in dockerfile() if word == name]


def test_dockerfile_runs_jobsvc_api_by_default() -> None:
    assert instructions("FROM")[-1] == "python:3.11-slim"
    assert json.loads(instructions("ENTRYPOINT")[-1]) == ["jobsvc"]
    assert json.loads(instructions("CMD")[-1]) == ["api"]
    assert "8000" in instructions("EXPOSE")[-1].split()
    assert any("JOBSVC_HOST=0.0.0.0" in env.split() for env in instructions("ENV"))


def test_dockerfile_installs_the_package_with_its_schema() -> None:
    copied = " ".join(instructions("COPY")).split()
    # The schema inside the package is a real file: a build context that does not
    # follow symlinks still carries it (the top-level schema.sql is the link).
    assert (ROOT / "jobsvc" / "schema.sql").is_file() and not (ROOT / "jobsvc" / "schema.sql").is_symlink()
    assert (ROOT / "schema.sql").resolve() == (ROOT / "jobsvc" / "schema.sql").resolve()
    assert "pyproject.toml" in copied
    assert any(src.rstrip("/") == "jobsvc" for src in copied)
    run = " ".join(instructions("RUN"))
    assert re.search(r"pip install \.(\s|$)", run)
    assert " -e " not in run and "--editable" not in run


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    # Without a Docker engine here, check what `docker build` needs from the context.
    ignored = dockerignore()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = set()
    for args in instructions("COPY"):
        *sources, _destination = args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the build context"
            assert source.rstrip("/") not in ignored, f"COPY {source}: excluded by .dockerignore"
            copied.add(source.rstrip("/"))
    assert pyproject["project"]["readme"] in copied  # setuptools reads it to build


def test_dockerfile_healthcheck_asks_the_api_or_the_workers_metrics_port() -> None:
    (check,) = instructions("HEALTHCHECK")
    options, _, command = check.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"] and "/healthz" in argv[2] and "JOBSVC_METRICS_PORT" in argv[2]
    compile(argv[2], "healthcheck", "exec")


def test_dockerfile_does_not_run_as_root() -> None:
    user = instructions("USER")[-1]
    assert user not in ("root", "0")


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = dockerignore()
    assert {".venv", ".jobsvc", ".git"} <= ignored


# --- jobsvc --help -----------------------------------------------------------------------


def test_jobsvc_help_lists_every_design_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobsvc.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listed = set(re.findall(r"^\s{4}([a-z]+)\s", done.stdout, re.MULTILINE))
    assert set(DESIGN_COMMANDS) <= listed, done.stdout


@pytest.mark.parametrize("command", DESIGN_COMMANDS)
def test_jobsvc_command_help_exits_0(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    assert f"usage: jobsvc {command}" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["enqueue", "list", "cancel", "watch"])
def test_client_commands_take_url_and_json(command: str) -> None:
    options = {opt for action in subcommands()[command]._actions for opt in action.option_strings}
    assert {"--url", "--json", "--help"} <= options
