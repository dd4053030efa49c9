"""The jobsvc exception hierarchy.

    JobsvcError                 root of everything jobsvc raises on purpose
    ├── ConfigError             a JOBSVC_* setting is missing or malformed
    ├── InvalidRequest          a client sent something we refuse (HTTP 400)
    │   ├── BodyTooLarge        the request body is over the API's limit (HTTP 413)
    │   └── UnsupportedMedia    the request body is not UTF-8 JSON (HTTP 415)
    ├── Unauthorized            no token, or an unknown or revoked one (HTTP 401)
    ├── Forbidden               a valid key without the route's scope (HTTP 403)
    ├── NotFound                the job or result does not exist (HTTP 404)
    ├── Conflict                same jobId + resultFile, different request (HTTP 409)
    ├── TooManyRequests         come back after ``retry_after`` seconds (HTTP 429 + Retry-After)
    │   ├── QuotaExceeded       the tenant has JOBSVC_TENANT_MAX_QUEUED unfinished results
    │   └── RateLimited         the caller is over JOBSVC_RATE_LIMIT requests per second
    ├── DatabaseUnavailable     PostgreSQL could not be reached in time (HTTP 503)
    ├── SchemaMismatch          the database's schema version is not the code's
    └── JobError                a job attempt failed; decides the job's outcome
        ├── PermanentError      retrying cannot help: the job is Failed at once
        └── TransientError      may work later: retried with backoff until maxAttempts

Errors from the layers below (psycopg, httpx, boto3) are translated into these
in exactly one place per layer (`db`, `fetch`, `storage`), with ``raise … from``.
The HTTP status of each error is decided in one place, `jobsvc.api.app`. Text a client
sent is echoed in an error sentence only through `quoted` (bounded, escaped).
"""

from __future__ import annotations

#: The most characters of a client's text an error sentence echoes.
ECHO_LIMIT = 80


class JobsvcError(Exception):
    """Root of every error jobsvc raises on purpose. ``str(err)`` is a sentence for humans."""


class ConfigError(JobsvcError):
    """A setting is missing or malformed; raised once, at start-up."""


class InvalidRequest(JobsvcError):
    """The client's request is malformed or refused (bad field, unsafe URL, not an image)."""


class BodyTooLarge(InvalidRequest):
    """The request body is larger than the API accepts (by its Content-Length or its bytes)."""


class UnsupportedMedia(InvalidRequest):
    """The request body is not in a media type the route reads (JSON, UTF-8)."""


class Unauthorized(JobsvcError):
    """The request carries no bearer token, or one that is unknown or revoked. Its
    sentence never contains the token."""

    #: The ``WWW-Authenticate`` challenge of the 401 (RFC 6750).
    challenge = 'Bearer realm="jobsvc"'


class Forbidden(JobsvcError):
    """The key is valid but lacks the scope the route needs."""


class NotFound(JobsvcError):
    """The requested job or result does not exist."""


class Conflict(JobsvcError):
    """The (jobId, resultFile) pair already exists with a different request."""


class TooManyRequests(JobsvcError):
    """Refused for now: the caller may try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class QuotaExceeded(TooManyRequests):
    """The tenant already has its cap of Queued + Processing results."""


class RateLimited(TooManyRequests):
    """The caller sent more requests per second than the API process allows it."""


class DatabaseUnavailable(JobsvcError):
    """PostgreSQL did not answer (connection refused, pool timeout, connection lost)."""


class SchemaMismatch(JobsvcError):
    """The database's schema is older (run `jobsvc migrate`) or newer (upgrade jobsvc) than the code."""


class JobError(JobsvcError):
    """A job attempt failed. Subclasses decide whether it is retried."""


class PermanentError(JobError):
    """Retrying cannot help (blocked address, 4xx, not an image, too large): Failed at once."""


class TransientError(JobError):
    """May succeed later (timeout, connection error, 5xx, 408/429, storage hiccup): retried."""


def quoted(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` as a Python literal for an error sentence: control characters escaped by
    `repr`, and at most ``limit`` characters of it, the cut marked with an ellipsis."""
    if len(text) <= limit:
        return repr(text)
    head = repr(text[:limit])
    return head[:-1] + "…" + head[-1]
