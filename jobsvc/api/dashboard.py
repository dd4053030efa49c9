"""The operator's pages: the dashboard, the API docs, and the counts they show.

See docs/ARCHITECTURE.md, "The dashboard".

- ``GET /`` redirects to ``/dashboard``: one page of plain HTML, CSS and a little
  JavaScript shipped in this package (``jobsvc/static/dashboard/``). It loads
  nothing from elsewhere (no CDN, font or script), so it works offline; its
  Content-Security-Policy says so to the browser too.
- ``GET /docs`` renders ``/openapi.json`` with Swagger UI from the files of the
  ``swagger-ui-bundle-v2`` wheel, served here: no CDN either.
- ``GET /results/stats``: counts per status and the oldest due Queued result's
  age, counted by the server, so the page's numbers do not depend on the rows it
  holds (it shows only the latest page of them).

Static files are served from a fixed list (no path from the request reaches the
file system), with their content types.
"""

from __future__ import annotations

import importlib.resources
import json
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import cast

from quart import Blueprint, Response, redirect
from quart_schema import document_querystring, document_response, hide, operation_id
from swagger_ui_bundle import swagger_ui_path
from werkzeug.exceptions import NotFound

from jobsvc import queue
from jobsvc.api.auth import public, reads, requires
from jobsvc.api.services import services
from jobsvc.api.wire import query
from jobsvc.db import Conn
from jobsvc.keys import Scope
from jobsvc.schemas import ErrorBody, StatsBody, StatsQuery

__all__ = ["blueprint"]

blueprint = Blueprint("dashboard", __name__)

_PAGE_FILES: Traversable = importlib.resources.files("jobsvc") / "static" / "dashboard"
_SWAGGER_FILES: Traversable = Path(str(swagger_ui_path))

#: What each served file is; nothing else under these directories is served.
_DASHBOARD_ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
_DOCS_ASSETS = {
    "swagger-ui.css": (_SWAGGER_FILES, "text/css; charset=utf-8"),
    "swagger-ui-bundle.js": (_SWAGGER_FILES, "text/javascript; charset=utf-8"),
    "docs.js": (_PAGE_FILES, "text/javascript; charset=utf-8"),
}

#: The dashboard may talk to this service only. Images are the exception: with S3
#: storage a thumbnail is a redirect to a presigned URL on the storage's host.
_DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' blob: data: http: https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


#: index.html says which JOBSVC_AUTH the page meets: "keys" as shipped (the closed
#: choice), "off" written over it when the service asks for no token. With keys and no
#: token kept, the page asks for one before making any request.
_AUTH_META = b'<meta name="jobsvc-auth" content="%s">'


def _file(root: Traversable, name: str, content_type: str, *, cache: str = "no-cache") -> Response:
    try:
        body = (root / name).read_bytes()
    except FileNotFoundError:
        raise NotFound() from None
    return Response(body, content_type=content_type, headers={"Cache-Control": cache})


@blueprint.get("/")
@hide
@public
async def root() -> Response:
    return cast(Response, redirect("/dashboard", 302))


@blueprint.get("/dashboard")
@hide
@public  # the page holds no data: it asks for a token and reads the API with it
async def dashboard() -> Response:
    page = (_PAGE_FILES / "index.html").read_bytes()
    if services().settings.auth != "keys":
        page = page.replace(_AUTH_META % b"keys", _AUTH_META % b"off", 1)
    response = Response(page, content_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})
    response.headers["Content-Security-Policy"] = _DASHBOARD_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@blueprint.get("/dashboard/<name>")
@hide
@public
async def dashboard_asset(name: str) -> Response:
    if name not in _DASHBOARD_ASSETS:
        raise NotFound()
    return _file(_PAGE_FILES, name, _DASHBOARD_ASSETS[name])


@blueprint.get("/docs")
@hide
@public
async def docs() -> Response:
    return _file(_PAGE_FILES, "docs.html", "text/html; charset=utf-8")


@blueprint.get("/docs/<name>")
@hide
@public
async def docs_asset(name: str) -> Response:
    if name not in _DOCS_ASSETS:
        raise NotFound()
    root, content_type = _DOCS_ASSETS[name]
    # Swagger UI's files change only with the pinned wheel: let browsers keep them a day.
    cache = "public, max-age=86400" if root is _SWAGGER_FILES else "no-cache"
    return _file(root, name, content_type, cache=cache)


@blueprint.get("/results/stats")
@operation_id("get_stats")
@document_response(StatsBody, 200)
@document_response(ErrorBody, 500)
@document_response(ErrorBody, 503)
@document_querystring(StatsQuery)
@requires(Scope.READ)
async def stats() -> Response:
    """Counts per status and the age of the oldest due Queued result, of the key's tenant
    (an admin key: of every tenant, or of `tenant`).

    Counted by the server on every call (the dashboard asks again when events
    arrive, at most once a second), so they cover every row, not a page of them.
    """
    tenant = reads(query(StatsQuery).tenant)

    def read(conn: Conn) -> dict[str, object]:
        counts = queue.status_counts(conn, tenant)
        depth, seconds = queue.queue_age(conn, tenant)
        return {
            "counts": counts,
            "queueDepth": depth,
            "oldestQueuedAgeMs": round(seconds * 1000) if depth else None,
        }

    body = await services().run(read)
    return Response(json.dumps(body), content_type="application/json", headers={"Cache-Control": "no-store"})
