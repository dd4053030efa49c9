"""`json_response` writes, with pydantic-core's encoder, exactly the bytes the standard
library writes (``json.dumps(data, ensure_ascii=False, separators=(",", ":"))`` as
UTF-8) for every value our answers hold: JSON's types without floats, any text (control
characters, quotes, backslashes, non-ASCII, U+2028) in values and keys."""

from __future__ import annotations

import json
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from quart import Quart

from jobsvc.api.wire import json_response

# Text without lone surrogates: neither encoder can write those as UTF-8 (both raise).
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _text
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_text, inner, max_size=5),
    max_leaves=30,
)


def _stdlib(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def _body(data: Any) -> bytes:
    async with Quart(__name__).app_context():
        response = json_response(data, 202, {"Location": "/x"})
        assert response.status_code == 202
        assert response.headers["Location"] == "/x"
        assert response.mimetype == "application/json"
        body: bytes = await response.get_data(as_text=False)
        return body


@settings(max_examples=400, deadline=None)
@given(_values)
def test_json_response_bytes_match_stdlib_json(data: Any) -> None:
    assert trio.run(_body, data) == _stdlib(data)


def test_json_response_bytes_match_stdlib_json_for_a_batch_answer() -> None:
    view = {
        "jobId": "5f0c8a5e-3b8e-4d8e-9a51-3c1f3e6c2a10",
        "type": "ingest \u00e9\u2028",
        "imgUrl": 'http://h/a/"x"\\.png',
        "status": "Queued",
        "createdAt": 1_764_000_000_123,
        "durationMs": None,
        "cancelRequested": False,
    }
    answers = [{"status": 202, "job": view, "error": None}, {"status": 400, "job": None, "error": "a\nb"}]
    data = {"results": answers}
    assert trio.run(_body, data) == _stdlib(data)
