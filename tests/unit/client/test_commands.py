"""jobsvc.client.commands: the flags each command accepts, through the ``jobsvc`` parser."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from jobsvc import cli
from tests.unit.client.support import JOB

# --- arguments ---------------------------------------------------------------------------


def parse(*argv: str) -> Any:
    return cli.build_parser().parse_args(list(argv))


CLIENT_ARGVS = (
    ["enqueue", "http://i.test/a.png"],
    ["list"],
    ["get", JOB],
    ["cancel", JOB],
    ["retry", JOB],
    ["download", JOB, "a.png"],
    ["watch"],
)


def test_client_commands_default_to_the_local_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBSVC_URL", raising=False)
    for argv in CLIENT_ARGVS:
        assert parse(*argv).url == "http://127.0.0.1:8000"


def test_client_commands_take_the_url_from_jobsvc_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSVC_URL", "https://jobs.example:8443/")
    for argv in CLIENT_ARGVS:
        assert parse(*argv).url == "https://jobs.example:8443"
        assert parse(*argv, "--url", "http://api:9000").url == "http://api:9000"  # the flag wins


def test_a_malformed_jobsvc_url_is_a_usage_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOBSVC_URL", "api:8000")
    with pytest.raises(SystemExit) as exc:
        parse("list")
    assert exc.value.code == 2
    assert "JOBSVC_URL" in capsys.readouterr().err


@pytest.mark.parametrize("spelling", [JOB.upper(), "{" + JOB + "}", JOB.replace("-", ""), f"urn:uuid:{JOB}"])
def test_job_ids_in_any_uuid_spelling_are_sent_canonical(spelling: str) -> None:
    assert parse("get", spelling).job_id == JOB
    assert parse("list", "--job-id", spelling).job_id == JOB
    assert parse("enqueue", "http://i.test/a.png", "--job-id", spelling).job_id == JOB


def test_download_arguments() -> None:
    args = parse("download", JOB, "a b.png")
    assert (args.job_id, args.result_file, args.output) == (JOB, "a b.png", None)
    assert parse("download", JOB, "a.png", "-o", "-").output == "-"


def test_enqueue_arguments() -> None:
    flags = "--url http://api:9000/ --priority 5 --run-at 2026-01-02T03:04:05Z --max-attempts 2 --type thumb"
    args = parse("enqueue", "http://i.test/a.png", *flags.split())
    assert (args.img_url, args.url, args.priority, args.run_at, args.max_attempts, args.type) == (
        "http://i.test/a.png",
        "http://api:9000",
        5,
        1767323045000,
        2,
        "thumb",
    )
    assert parse("enqueue", "http://i.test/a.png").type == "ingest"


def test_list_status_is_case_insensitive() -> None:
    assert parse("list", "--status", "completed").status == "Completed"


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "--status", "done"],
        ["list", "--limit", "0"],
        ["list", "--url", "ftp://api"],
        ["enqueue", "http://i.test/a.png", "--run-at", "soon"],
        ["watch", "--timeout", "-1"],
        ["watch", "--timeout", "nan"],
        ["list", "--job-id", "42"],
        ["enqueue", "http://i.test/a.png", "--job-id", "nope"],
        ["get", "nope"],
        ["cancel", "nope"],
        ["cancel", str(uuid.UUID(int=0))],
        ["retry", JOB[:-1]],
        ["download", "nope", "a.png"],
        ["download", JOB, "../a.png"],
        ["download", JOB, ".."],
        ["watch", "nope"],
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_a_malformed_job_id_exits_2_before_any_request(capsys: pytest.CaptureFixture[str]) -> None:
    # An address nothing listens on: a request would exit 3, not 2.
    with pytest.raises(SystemExit) as exc:
        cli.main(["cancel", "nope", "--url", "http://127.0.0.1:9"])
    assert exc.value.code == 2
    assert "expected a job id" in capsys.readouterr().err
