"""What the route modules share on the wire: JSON answers, the checked JSON body
and query string, and the error answers every route documents."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import pydantic
import pydantic_core
from quart import Response, request
from quart_schema import document_response

from jobsvc.errors import BodyTooLarge, InvalidRequest, UnsupportedMedia, quoted
from jobsvc.schemas import ErrorBody, RetryAfterHeaders, error_sentence

__all__ = [
    "MAX_BATCH_BODY_BYTES",
    "MAX_BODY_BYTES",
    "body_too_large",
    "documented",
    "json_body",
    "json_response",
    "query",
    "validate",
]

#: The largest enqueue body accepted (Content-Length and bytes actually received).
MAX_BODY_BYTES = 64 * 1024
#: The largest batch body accepted; also Quart's ceiling for every request
#: (``MAX_CONTENT_LENGTH``): the routes check their own, smaller, limits.
MAX_BATCH_BODY_BYTES = 4 * 1024 * 1024
#: The routes whose bodies may be larger than `MAX_BODY_BYTES`.
_BODY_LIMITS = {"/results/batch": MAX_BATCH_BODY_BYTES}

M = TypeVar("M", bound=pydantic.BaseModel)
F = TypeVar("F", bound=Callable[..., Any])

#: The errors any route may answer, documented on every one (429: JOBSVC_RATE_LIMIT on
#: the /results routes, and on enqueue the tenant's quota).
_COMMON_ERRORS: dict[int, tuple[type[pydantic.BaseModel], type[pydantic.BaseModel] | None]] = {
    **{code: (ErrorBody, None) for code in (400, 500, 503)},
    429: (ErrorBody, RetryAfterHeaders),
}


def documented(
    *responses: tuple[int, type[pydantic.BaseModel], type[pydantic.BaseModel] | None],
) -> Callable[[F], F]:
    """Document ``(status, body model, headers model)`` answers, and the common errors."""

    def decorate(fn: F) -> F:
        for code, model, headers in [*responses, *((c, m, h) for c, (m, h) in _COMMON_ERRORS.items())]:
            fn = document_response(model, code, headers)(fn)
        return fn

    return decorate


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    # pydantic-core's encoder writes the bytes ``json.dumps(data, ensure_ascii=False,
    # separators=(",", ":")).encode()`` writes for JSON's types (tests/unit/test_wire_json.py)
    # at a third of the CPU: a batch's 1,000 answers took 3.5 ms to encode, now 1.1 ms.
    body = pydantic_core.to_json(data)
    return Response(body, status=status, headers=dict(headers or {}), content_type="application/json")


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise InvalidRequest(error_sentence(exc)) from None


def query(model: type[M]) -> M:
    """The query string as ``model``; a parameter given twice is refused, not guessed."""
    args = request.args
    for key in args:
        if len(args.getlist(key)) > 1:
            raise InvalidRequest(f"query parameter {quoted(key)} is given more than once")
    return validate(model, args.to_dict())


async def json_body() -> Any:
    """The request's JSON body, with the 413 / 415 / 400 checks in that order (413: over
    the route's limit, `MAX_BODY_BYTES` unless the route is in `_BODY_LIMITS`)."""
    limit = body_limit()
    length = request.content_length
    if length is not None and length > limit:
        raise body_too_large()
    mimetype = request.mimetype
    if not (
        mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))
    ):
        raise UnsupportedMedia(
            f"the body must be JSON (Content-Type: application/json), not {quoted(mimetype or 'none')}"
        )
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMedia(f"the body must be UTF-8 JSON, not {charset}")
    body = cast(bytes, await request.get_data(cache=False, as_text=False))
    if len(body) > limit:
        raise body_too_large()
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def body_limit() -> int:
    """The most bytes the current request's route accepts in a body."""
    return _BODY_LIMITS.get(request.path, MAX_BODY_BYTES)


def body_too_large() -> BodyTooLarge:
    """The 413 of a body over its route's limit, whoever notices it (this module or Quart)."""
    return BodyTooLarge(f"the request body is larger than {body_limit()} bytes")
