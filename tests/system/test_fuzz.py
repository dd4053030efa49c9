"""Hostile input (issue 3, "Hostile input"): a schema-driven fuzz run (schemathesis, from
our own /openapi.json) of a real `jobsvc api` process over HTTP, with positive and
negative examples for every operation: no 5xx, no HTML, every error a JSON
``{"error": "<sentence>"}``. The table tests and the storage property are in
tests/integration/test_hostile_input.py.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
import trio
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Err

from jobsvc.model import check_image_url, result_file_from_url
from tests.fixtures.processes import Spawn, api_env, start_api
from tests.helpers import SEGMENTS, enqueue_body

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- strategies


_JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.integers(-(2**70), 2**70)
)
_URLS = st.one_of(
    SEGMENTS.map(lambda segment: "http://h.test/a/" + segment),
    st.text(max_size=60).map(lambda rest: "https://" + rest),
)
#: Enqueue bodies: the right types with hostile values, or anything at all in each field.
ENQUEUE_BODIES = st.one_of(
    st.fixed_dictionaries(
        {"jobId": st.uuids().map(str), "type": st.text(min_size=1, max_size=70), "imgUrl": _URLS},
        optional={
            "priority": st.integers(-150, 150),
            "runAt": st.integers(-1, 2**53),
            "maxAttempts": st.integers(0, 12),
        },
    ),
    st.fixed_dictionaries(
        {
            "jobId": st.one_of(st.uuids().map(str), st.text(max_size=40), _JSON_SCALARS),
            "type": st.one_of(st.text(min_size=1, max_size=70), _JSON_SCALARS),
            "imgUrl": st.one_of(_URLS, _JSON_SCALARS),
        },
        optional={
            "priority": _JSON_SCALARS,
            "runAt": _JSON_SCALARS,
            "maxAttempts": _JSON_SCALARS,
            "extra": st.recursive(_JSON_SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=5),
        },
    ),
)

# --------------------------------------------------------------------------- schema-driven fuzz

EXAMPLES = 50  # per operation and generation mode
STREAM_EXAMPLES = 10  # GET /results/events: a valid request is an endless stream, read for 0.3 s


def _problems(label: str, status: int, content_type: str, content: bytes) -> list[str]:
    """What is wrong with one answer: a 5xx, an HTML body, an error that is not our JSON shape."""
    found = []
    if status >= 500:
        found.append(f"{status}")
    if "html" in content_type or content.lstrip()[:1] == b"<":
        found.append("an HTML body")
    if status >= 400:
        try:
            doc = json.loads(content)
        except ValueError:
            doc = None
        if not (
            content_type.startswith("application/json")
            and isinstance(doc, dict)
            and set(doc) == {"error"}
            and isinstance(doc["error"], str)
            and doc["error"]
        ):
            found.append(f"an error body that is not {{'error': sentence}}: {content[:200]!r}")
    return [f"{label} -> {status}: {', '.join(found)}"] if found else []


class Tally:
    def __init__(self) -> None:
        self.statuses: dict[str, int] = {}
        self.problems: list[str] = []

    def add(self, label: str, status: int, content_type: str, content: bytes) -> None:
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        self.problems.extend(_problems(label, status, content_type, content))


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    session: requests.Session,
    tally: Tally,
    **fixed: Any,
) -> None:
    streams = operation.path == "/results/events"
    timeout = (5.0, 0.3) if streams else 10.0

    @hypothesis.settings(
        max_examples=STREAM_EXAMPLES if streams else EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests every run: a failure reproduces
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, timeout=timeout)
        label = f"{case.method} {case.formatted_path} {case.query or ''} {case.body!r:.200}"
        # schemathesis' headers: lowercase keys, list values
        content_type = ", ".join(response.headers.get("content-type", []))
        tally.add(label, response.status_code, content_type, response.content)

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, operation.label  # nothing in it can be made invalid


def _fuzz_enqueue_bodies(base_url: str, session: requests.Session, tally: Tally) -> None:
    """Hypothesis-made enqueue bodies, deeper than the schema's own examples reach."""

    @hypothesis.settings(
        max_examples=150,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(body=ENQUEUE_BODIES)
    def run(body: dict[str, Any]) -> None:
        data = json.dumps(body)  # NaN and Infinity included: not JSON, must be a 400
        headers = {"Content-Type": "application/json"}
        response = session.post(f"{base_url}/results/enqueue", data=data, headers=headers, timeout=10)
        content_type = response.headers.get("Content-Type", "")
        tally.add(f"POST /results/enqueue {data:.300}", response.status_code, content_type, response.content)
        if response.status_code == 202:
            expected = result_file_from_url(check_image_url(body["imgUrl"]))
            assert response.json()["resultFile"] == expected

    run()


def _fuzz(base_url: str) -> Tally:
    """Every operation, positive and negative examples, plus runs with a real and an unknown
    jobId in the path; then hypothesis-made enqueue bodies."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    tally = Tally()
    with requests.Session() as session:
        session.trust_env = False
        existing = str(uuid.uuid4())
        body = enqueue_body("http://h.test/a/x.png", existing, type="fuzz")
        assert session.post(f"{base_url}/results/enqueue", json=body, timeout=10).status_code == 202
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                raise result.err()  # our own schema must load
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz_operation(operation, mode, base_url, session, tally)
            if "{jobId}" in operation.path:
                for job_id in (existing, str(uuid.uuid4())):
                    fixed = {"path_parameters": {"jobId": job_id}}
                    _fuzz_operation(operation, GenerationMode.POSITIVE, base_url, session, tally, **fixed)
        _fuzz_enqueue_bodies(base_url, session, tally)
    return tally


async def test_fuzz_of_a_real_api_has_no_5xx_and_no_html(
    spawn: Spawn, database_url: str, tmp_path: Path
) -> None:
    api = await start_api(spawn, api_env(database_url, f"file://{tmp_path}"))
    tally = await trio.to_thread.run_sync(_fuzz, api.url)
    print(f"\nfuzz answers by status: {dict(sorted(tally.statuses.items()))}")
    assert tally.problems == [], "\n".join(tally.problems[:30])
    assert sum(tally.statuses.values()) > 500  # it did run: every operation, both modes
    assert {"200", "202", "400", "404"} <= set(tally.statuses)
    assert api.proc.popen.poll() is None, api.proc.output()[-3000:]
    assert "Traceback" not in api.proc.output()
