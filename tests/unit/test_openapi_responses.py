"""`jobsvc.api.openapi.install`: a route's finished `Response` skips quart-schema's
return-value conversion; anything else is still converted by it."""

from __future__ import annotations

import json
from typing import Any

import pydantic
from quart import Response
from quart_trio import QuartTrio

from jobsvc.api import openapi


class _Doc(pydantic.BaseModel):
    job_id: str


def _app() -> QuartTrio:
    app = QuartTrio("test")
    openapi.install(app)
    return app


async def test_a_response_is_passed_through_unconverted(monkeypatch: Any) -> None:
    app = _app()
    calls: list[Any] = []
    import quart_schema.extension

    real = quart_schema.extension.convert_response_return_value
    monkeypatch.setattr(
        quart_schema.extension, "convert_response_return_value", lambda r: calls.append(r) or real(r)
    )
    answer = Response(b"{}", status=202, content_type="application/json")
    async with app.app_context():
        made = await app.make_response(answer)
    assert made is answer and calls == []


async def test_a_model_is_still_converted_by_quart_schema() -> None:
    app = _app()
    async with app.app_context():
        made = await app.make_response((_Doc(job_id="x"), 201))
    assert made.status_code == 201
    assert json.loads(await made.get_data()) == {"job_id": "x"}
