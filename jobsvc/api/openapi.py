"""The API's OpenAPI document: quart-schema's, post-processed by `SchemaProvider` so that
client generators can use it (docs/ARCHITECTURE.md, "The API"). The models it
describes are in `jobsvc.schemas`."""

from __future__ import annotations

from typing import Any, cast

from pydantic.alias_generators import to_camel
from quart import Response
from quart_schema import QuartSchema
from quart_schema.openapi import QUART_SCHEMA_OPERATION_ID_ATTRIBUTE, OpenAPIProvider
from quart_trio import QuartTrio

__all__ = ["SchemaProvider", "install"]

#: Each blueprint's routes share one tag (a generated client groups its functions by tag).
_TAGS = {
    "results": "results",
    "batch": "results",
    "events": "results",
    "dashboard": "results",
    "ops": "operations",
    "auth": "auth",
}
_TAG_DESCRIPTIONS = {
    "results": "Enqueue, list, follow, cancel and download jobs' results.",
    "operations": "Probes and metrics for operators.",
    "auth": "Who a token acts as.",
}
_STATUS_DESCRIPTION = (
    "A result's status: Queued (waiting), Processing (a worker holds it), then Completed, Failed or Canceled."
)


class SchemaProvider(OpenAPIProvider):
    """quart-schema's document, made usable by client generators: every object schema is
    a component referenced with ``$ref`` (written inline per response, each generator
    makes one class per response and gives up on duplicates), one camelCase
    operationId and one tag per route, a description per operation, each response's
    own media type and headers where OpenAPI wants them, and plain text (Markdown
    backticks, not reStructuredText's double ones)."""

    def schema(self) -> dict[str, Any]:
        doc = super().schema()
        components: dict[str, Any] = doc["components"]["schemas"]
        for operations in doc["paths"].values():
            for operation in operations.values():
                if "requestBody" in operation:  # quart-schema leaves it optional; no route is
                    operation["requestBody"]["required"] = True
                body = operation.get("requestBody", {}).get("content", {})
                for response in [body, *(r.get("content", {}) for r in operation["responses"].values())]:
                    for media in response.values():
                        media["schema"] = _as_ref(media["schema"], components)
        for component in components.values():
            for prop in component.get("properties", {}).values():
                prop.pop("title", None)  # pydantic's "Jobid"-style titles name nothing
        if "Status" in components:  # the enum's docstring is about the table, not the API
            components["Status"]["description"] = _STATUS_DESCRIPTION
        doc["components"]["schemas"] = dict(sorted(components.items()))
        doc["tags"] = [{"name": n, "description": d} for n, d in _TAG_DESCRIPTIONS.items()]
        return cast(dict[str, Any], _plain(doc))

    def build_paths(self, rule: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        blueprint = rule.endpoint.rsplit(".", 1)[0]
        for operations in paths.values():
            for operation in operations.values():
                # The docstring after its summary line; a one-line docstring is both.
                operation["description"] = operation.get("description", "").strip() or operation.get(
                    "summary", ""
                )
                operation["tags"] = [_TAGS[blueprint]]
                for parameter in operation.get("parameters", []):
                    # The route takes any string so that a malformed id is a 400 with a
                    # sentence, not a 404; the contract is still a UUID.
                    if parameter.get("in") == "path" and parameter.get("name") == "jobId":
                        parameter["schema"] = {"type": "string", "format": "uuid"}
        return paths, components

    def operation_id(self, method: str, path: str, func: Any) -> str | None:
        """The route function's name in camelCase (or quart-schema's ``operation_id``), without
        the method quart-schema prefixes: ``enqueue``, ``listResults``, ``getJob``."""
        name = getattr(func, QUART_SCHEMA_OPERATION_ID_ATTRIBUTE, func.__name__)
        return to_camel(name)

    def build_response_object(
        self, model: type[Any], headers_model: type[Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        response, components = super().build_response_object(model, headers_model)
        content = response.pop("content")
        headers = content.pop("headers", None)  # quart-schema 0.25 nests them under content
        if headers:
            response["headers"] = {_header_name(name): header for name, header in headers.items()}
        media = getattr(model, "media_type", "application/json")
        if media is not None:
            others = getattr(model, "other_media_types", ())
            response["content"] = {m: content["application/json"] for m in (media, *others)}
        return response, components


def _as_ref(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """An object schema moved to ``components`` (by its title) and replaced by a ``$ref``;
    an array of such keeps its ``items`` reference inline; anything else stays as it is."""
    if schema.get("type") == "object" and "title" in schema:
        name = schema["title"]
        if components.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas are both named {name}")
        return {"$ref": f"#/components/schemas/{name}"}
    if schema.get("type") == "array" and "$ref" in schema.get("items", {}):
        return {k: v for k, v in schema.items() if k != "title"}
    return schema


def _header_name(name: str) -> str:
    """``etag`` → ``ETag``, ``location`` → ``Location``: as the answers spell them."""
    return {"etag": "ETag"}.get(name, "-".join(part.capitalize() for part in name.split("-")))


def _plain(value: Any) -> Any:
    """Descriptions as plain text (Markdown), not reStructuredText: ``x`` → `x`."""
    if isinstance(value, str):
        return value.replace("``", "`")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def install(app: QuartTrio) -> None:
    """Serve ``/openapi.json`` for ``app``, built by `SchemaProvider`: the document's info,
    the bearer scheme every route but the public ones needs, and no UI of quart-schema's
    own (`jobsvc.api.dashboard` serves ``/docs`` from local files)."""
    QuartSchema(
        app,
        info={
            "title": "jobsvc",
            "version": "0.1.0",
            "description": (
                "A PostgreSQL-backed queue of image-ingest jobs. JSON, camelCase, timestamps in "
                'epoch milliseconds. Every error is {"error": "<sentence>"}: besides the codes '
                "listed per operation, an unknown path is 404, a wrong method 405, a body over "
                "64 KiB 413 (4 MiB for a batch). Every route but /healthz, /readyz, /metrics, "
                "/openapi.json and the pages needs `Authorization: Bearer <token>` (a key from "
                "`jobsvc keys create`): 401 without a valid one, 403 without the route's scope."
            ),
        },
        security_schemes={"bearerAuth": {"type": "http", "scheme": "bearer"}},
        security=[{"bearerAuth": []}],
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,  # jobsvc.api.dashboard serves /docs from local files (offline)
        openapi_provider_class=SchemaProvider,
    )
    _pass_responses_through(app)


def _pass_responses_through(app: QuartTrio) -> None:
    """Skip quart-schema's conversion of a route's return value when it is a `Response`.

    quart-schema wraps ``app.make_response`` to turn returned models into JSON: two
    ``model_dump`` calls and four config lookups per request, ~10 µs. Every jobsvc
    route and error handler returns a finished `Response` (`jobsvc.api.wire.json_response`),
    which that conversion hands on unchanged; anything else still goes through it.
    """
    converting = app.make_response
    plain = getattr(converting, "__wrapped__", None)  # quart-schema's functools.wraps
    if plain is None:
        return

    async def make_response(result: Any) -> Any:
        if isinstance(result, Response):
            return await plain(result)
        return await converting(result)

    app.make_response = make_response  # type: ignore[method-assign]
