"""The HTTP API, one module per part (docs/ARCHITECTURE.md, "The API"):

- `app` — `create_app(settings)`, the blueprints it registers, the error answers;
- `services` — the resources the routes use (`Services`), their lifetime, supervision;
- `results`, `events`, `ops`, `dashboard` — one blueprint per route group;
- `wire` — JSON answers, the checked body and query string;
- `openapi` — `/openapi.json`: quart-schema set up, its document shaped by `SchemaProvider`.
"""

from jobsvc.api.app import ERROR_STATUS, create_app, end_event_streams, status_for
from jobsvc.api.services import Services
from jobsvc.api.wire import MAX_BODY_BYTES

__all__ = ["ERROR_STATUS", "MAX_BODY_BYTES", "Services", "create_app", "end_event_streams", "status_for"]
