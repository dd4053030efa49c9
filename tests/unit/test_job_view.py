"""`job_view`, built as a dict, is exactly `JobView`'s JSON dump: same keys in the same
order, same values of the same types, same JSON text, for varied rows."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jobsvc.model import Job, Status
from jobsvc.schemas import JobView, job_view

_moments = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]),
)
_text = st.text(max_size=20)


@st.composite
def _jobs(draw: st.DrawFn) -> Job:
    # Early enough that created + 60 days still fits in a datetime.
    created = draw(_moments.filter(lambda moment: moment.year < 9999))
    started = draw(st.none() | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)))
    finished = draw(st.none() | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)))
    started_at = None if started is None else created + started
    finished_at = None if finished is None else (started_at or created) + finished
    return Job(
        id=draw(st.integers(1, 2**63 - 1)),
        job_id=draw(st.uuids()),
        result_file=draw(_text),
        type=draw(_text),
        img_url=draw(_text),
        status=draw(st.sampled_from(list(Status))),
        priority=draw(st.integers(-100, 100)),
        run_at=draw(_moments),
        attempts=draw(st.integers(0, 10)),
        max_attempts=draw(st.integers(1, 10)),
        error=draw(st.none() | _text),
        cancel_requested_at=draw(st.none() | _moments),
        worker_id=draw(st.none() | _text),
        created_at=created,
        updated_at=draw(_moments),
        started_at=started_at,
        finished_at=finished_at,
        tenant=draw(st.sampled_from(["default", "acme", "é"])),
    )


@settings(max_examples=500, deadline=None)
@given(_jobs())
def test_job_view_is_the_models_json_dump(job: Job) -> None:
    view = job_view(job)
    dumped = JobView.of(job).model_dump(mode="json", by_alias=True)
    assert list(view.items()) == list(dumped.items())
    assert [type(v) for v in view.values()] == [type(v) for v in dumped.values()]
    assert json.dumps(view, ensure_ascii=False) == json.dumps(dumped, ensure_ascii=False)
    assert JobView.of(job).model_dump_json(by_alias=True) == json.dumps(
        view, ensure_ascii=False, separators=(",", ":")
    )


def test_job_view_of_a_fixed_row() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    job = Job(
        id=1, job_id=uuid.UUID(int=5), result_file="a.png", type="t", img_url="http://h/a.png",
        status=Status.FAILED, priority=-3, run_at=created, attempts=2, max_attempts=2, error="boom",
        cancel_requested_at=None, worker_id="w", created_at=created, updated_at=created,
        started_at=created + timedelta(microseconds=999), finished_at=created + timedelta(seconds=1),
    )  # fmt: skip
    assert job_view(job) == JobView.of(job).model_dump(mode="json", by_alias=True)
    assert job_view(job)["jobId"] == "00000000-0000-0000-0000-000000000005"
    assert job_view(job)["status"] == "Failed" and type(job_view(job)["status"]) is str


@settings(max_examples=200, deadline=None)
@given(st.lists(_jobs(), min_size=2, max_size=6), st.randoms(use_true_random=False))
def test_job_view_times_are_each_rows_own_in_any_order(jobs: list[Job], rnd: Any) -> None:
    """`_ms` keeps its last conversion (a batch's rows share their timestamps): rows whose
    moments are equal in other zones, or differ, each show their own epoch ms."""
    zone = timezone(timedelta(hours=-3))
    shared = jobs[0].created_at
    same_moment = replace(jobs[1], created_at=shared.astimezone(zone), updated_at=shared, run_at=shared)
    rows = [*jobs, same_moment, jobs[0]]
    rnd.shuffle(rows)
    for job in rows:
        view = job_view(job)
        assert view["createdAt"] == int(job.created_at.timestamp() * 1000)
        assert view["updatedAt"] == int(job.updated_at.timestamp() * 1000)
        assert view["runAt"] == int(job.run_at.timestamp() * 1000)
