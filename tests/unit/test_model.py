"""Result-file naming, job-id parsing, URL checks and the JSON view: pure, no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from jobsvc.errors import InvalidRequest, quoted
from jobsvc.model import Job, Status, check_image_url, parse_job_id, result_file_from_url
from jobsvc.schemas import JobView, job_view


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://h/a/results_2.png?X-Amz-Expires=60&X-Amz-Signature=abc", "results_2.png"),
        ("https://h/a/b.jpg#frag", "b.jpg"),
        ("http://h/caf%C3%A9.png", "café.png"),
        ("http://h/a%20b.png", "a b.png"),
        ("http://h/%E6%97%A5%E6%9C%AC.webp", "日本.webp"),
        ("http://h:8080/x/y/z.gif", "z.gif"),
    ],
)
def test_result_file_is_last_segment_decoded(url: str, name: str) -> None:
    assert result_file_from_url(url) == name


@pytest.mark.parametrize(
    "url",
    [
        "http://h/",
        "http://h",
        "http://h/a/..",
        "http://h/a/.",
        "http://h/..%2Fetc%2Fpasswd",
        "http://h/a%5Cb.png",
        "http://h/a%00.png",
        "http://h/a%0A.png",
        "http://h/%FF.png",
        "http://h/%2E%2E",
        "http://h/" + "a" * 256,
        "http://h/%20padded.png%20",
    ],
)
def test_unusable_file_names_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest):
        result_file_from_url(url)


def test_job_id_accepts_uuid_refuses_nil_and_garbage() -> None:
    value = uuid.uuid4()
    assert parse_job_id(str(value)) == value
    assert parse_job_id(str(value).upper()) == value
    for bad in ("00000000-0000-0000-0000-000000000000", "nope", "", "1234"):
        with pytest.raises(InvalidRequest):
            parse_job_id(bad)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h/a.png",
        "file:///etc/passwd",
        "/relative/a.png",
        "http:///a.png",
        "http://user:pass@h/a.png",
        "http://h:0/a.png",
        "http://h:99999/a.png",
        "http://h/a b.png",
        "http://h/" + "a" * 2048,
        "javascript:alert(1)",
    ],
)
def test_bad_image_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest):
        check_image_url(url)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://xn--zz.invalid/a.png", "not a valid internationalized domain name"),
        ("http://xn--/a.png", "not a valid internationalized domain name"),
        ("http://a..b/a.png", "empty label"),
        ("http://.h.test/a.png", "empty label"),
        ("http://" + "a" * 64 + ".test/a.png", "label longer than 63"),
        ("http://" + "a." * 127 + "test/a.png", "longer than 253"),
        ("http://[v1.x]/a.png", "not a valid URL"),
    ],
)
def test_hosts_no_fetch_could_reach_are_refused_at_enqueue(url: str, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says):
        check_image_url(url)


def test_ordinary_host_spellings_pass() -> None:
    for host in ("h.test.", "日本.jp", "xn--wgv71a.jp", "EXAMPLE.com", "a" * 63 + ".test", "127.1", "[::1]"):
        assert check_image_url(f"http://{host}/a.png")


def test_quoted_escapes_controls_and_bounds_the_echo() -> None:
    assert quoted("a\x00\nb") == "'a\\x00\\nb'"
    assert quoted("x" * 5000) == "'" + "x" * 80 + "…'"
    assert quoted("it's" + "x" * 100).startswith("\"it's")  # one quote style, start to end
    assert quoted("it's" + "x" * 100).endswith('…"')


def test_good_image_urls_pass() -> None:
    for url in ("http://h/a.png", "https://[2001:db8::1]:8443/a.png", "https://h.example/a.png?x=1"):
        assert check_image_url(url) == url


def test_job_view_uses_epoch_ms_and_duration_from_creation() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    job = Job(
        id=1,
        job_id=uuid.UUID(int=1),
        result_file="a.png",
        type="ingest",
        img_url="http://h/a.png",
        status=Status.COMPLETED,
        priority=0,
        run_at=created,
        attempts=1,
        max_attempts=3,
        error=None,
        cancel_requested_at=None,
        worker_id=None,
        created_at=created,
        updated_at=created + timedelta(seconds=2),
        started_at=created + timedelta(milliseconds=5),
        finished_at=created + timedelta(milliseconds=1500),
    )
    view = job_view(job)
    assert view["createdAt"] == 1767225600000
    assert view["startedAt"] == 1767225600005
    assert view["durationMs"] == 1500 and view["runMs"] == 1495
    assert view["status"] == "Completed" and view["cancelRequested"] is False
    assert set(view) == {
        "jobId", "type", "imgUrl", "status", "resultFile", "createdAt", "updatedAt", "startedAt",
        "finishedAt", "durationMs", "runMs", "attempts", "maxAttempts", "priority", "runAt",
        "cancelRequested", "error", "tenant",
    }  # fmt: skip


def test_run_ms_leaves_out_the_delay_that_duration_ms_counts() -> None:
    """A job delayed by runAt shows its delay in durationMs (creation to finish), not in
    runMs (its attempt's start to finish); one canceled while Queued never ran."""
    created = datetime(2026, 1, 1, tzinfo=UTC)
    started = created + timedelta(hours=1)  # runAt an hour after creation
    common = dict(
        id=1, job_id=uuid.UUID(int=1), result_file="a.png", type="ingest", img_url="http://h/a.png",
        priority=0, run_at=started, max_attempts=3, error=None, cancel_requested_at=None,
        worker_id=None, created_at=created, updated_at=started,
    )  # fmt: skip
    delayed = Job(
        **common,  # type: ignore[arg-type]
        status=Status.COMPLETED,
        attempts=1,
        started_at=started,
        finished_at=started + timedelta(milliseconds=40),
    )
    assert delayed.duration_ms == 3_600_040 and delayed.run_ms == 40
    never_ran = Job(
        **common,  # type: ignore[arg-type]
        status=Status.CANCELED,
        attempts=0,
        started_at=None,
        finished_at=created + timedelta(seconds=1),
    )
    assert never_ran.duration_ms == 1000 and never_ran.run_ms is None
    assert job_view(never_ran)["runMs"] is None


def test_job_view_is_the_documented_model_in_its_field_order() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    job = Job(
        id=7,
        job_id=uuid.UUID(int=7),
        result_file="b.png",
        type="ingest",
        img_url="http://h/b.png",
        status=Status.QUEUED,
        priority=5,
        run_at=created + timedelta(minutes=1),
        attempts=0,
        max_attempts=3,
        error="retrying: 503",
        cancel_requested_at=created,
        worker_id=None,
        created_at=created,
        updated_at=created,
        started_at=None,
        finished_at=None,
    )
    view = job_view(job)
    # What /openapi.json documents (JobView) is what the answers carry, key for key.
    assert JobView.model_validate(view).model_dump(mode="json", by_alias=True) == view
    assert list(view) == [JobView.model_fields[name].alias for name in JobView.model_fields]
    assert view["jobId"] == str(job.job_id) and view["runAt"] == 1767225660000
    assert view["cancelRequested"] is True and view["durationMs"] is None and view["startedAt"] is None
