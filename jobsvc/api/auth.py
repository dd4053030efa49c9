"""Who a request acts as: bearer tokens, scopes, and the per-route decision.

Every route carries one decision, set by a decorator next to its route: `public`
(no token: health, readiness, metrics, the pages and the docs), `authenticated`
(any valid key: ``/auth/whoami``) or `requires(scope)`. One ``before_request``
check (`check_request`) applies it; a route without a decision needs ``admin``
(closed by default), and tests/integration/test_auth.py walks the route table so
that a new route without a decision fails the suite.

With ``JOBSVC_AUTH=keys`` a request without ``Authorization: Bearer <token>``, or
with an unknown or revoked token, is a 401 (``WWW-Authenticate: Bearer``); a key
without the route's scope is a 403. With ``off`` every request acts as tenant
``default`` with every scope. The routes read `principal()`: its ``reads`` is the
tenant filter their SQL applies (None for ``admin``: every tenant).

`Authenticator` looks keys up by the token's SHA-256 and caches the answer (also
"no such key") for ``cache_seconds`` (5 s): a revoked key is refused within that
bound, and a client's burst of requests costs one lookup. Last-used times are kept
in memory and written for all keys in one statement every ``flush_interval``
seconds (and once more at shutdown): never a write per request. A token is never
logged, put in an error sentence or a metric label; the cache holds only hashes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import trio
from quart import Blueprint, Response, current_app, g, request
from quart_schema import document_response, security_scheme

from jobsvc import keys
from jobsvc.api.wire import json_response
from jobsvc.db import Database
from jobsvc.errors import DatabaseUnavailable, Forbidden, Unauthorized
from jobsvc.keys import UNAUTHENTICATED, Principal, Scope
from jobsvc.schemas import ErrorBody, WhoAmIBody

__all__ = [
    "Authenticator",
    "Decision",
    "authenticated",
    "blueprint",
    "check_request",
    "decision_for",
    "principal",
    "public",
    "reads",
    "requires",
]

log = logging.getLogger("jobsvc.auth")

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "_jobsvc_auth"
#: How long a key lookup is trusted: the bound on a revocation taking effect.
CACHE_SECONDS = 5.0
#: How often the last-used times are written.
FLUSH_SECONDS = 5.0
#: Cached lookups at most (random tokens must not grow the cache without bound).
_MAX_CACHED = 10_000


@dataclass(frozen=True, slots=True)
class Decision:
    """A route's rule: ``public`` (no token), else a valid key with ``scope`` (None: any)."""

    public: bool = False
    scope: Scope | None = None


def _decide(decision: Decision) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        setattr(fn, _ATTRIBUTE, decision)
        if decision.public:
            fn = security_scheme([])(fn)  # /openapi.json: this operation needs no token
        else:
            fn = document_response(ErrorBody, 401)(fn)
            if decision.scope is not None:
                fn = document_response(ErrorBody, 403)(fn)
        return fn

    return decorate


def public(fn: F) -> F:
    """This route needs no token (it shows nothing of any tenant)."""
    return _decide(Decision(public=True))(fn)


def authenticated(fn: F) -> F:
    """This route needs a valid key, whatever its scopes."""
    return _decide(Decision())(fn)


def requires(scope: Scope) -> Callable[[F], F]:
    """This route needs a key with ``scope`` (or ``admin``)."""
    return _decide(Decision(scope=scope))


#: Routes registered by libraries, decided here: quart-schema's document and Quart's
#: static files (the dashboard's own files, public as the dashboard is).
_LIBRARY_ROUTES = {"openapi": Decision(public=True), "static": Decision(public=True)}
#: What a route without a decision gets: closed (only ``admin`` passes).
_UNDECIDED = Decision(scope=Scope.ADMIN)


def decision_for(endpoint: str, *, strict: bool = False) -> Decision | None:
    """The decision of the current app's ``endpoint`` (``strict``: None when it has none,
    else the closed default)."""
    view = current_app.view_functions.get(endpoint)
    decision = getattr(view, _ATTRIBUTE, None) or _LIBRARY_ROUTES.get(endpoint)
    if decision is None and not strict:
        return _UNDECIDED
    return decision


def principal() -> Principal:
    """Who the current request acts as (set by `check_request`)."""
    found = g.get("jobsvc_principal")
    return found if isinstance(found, Principal) else UNAUTHENTICATED


def reads(asked: str | None = None) -> str | None:
    """The tenant filter of the current request's reads: its key's tenant; for ``admin``,
    the ``tenant`` it asked for (None: every tenant). Another key asking for another
    tenant is `Forbidden`."""
    who = principal()
    if who.admin:
        return asked
    if asked is not None and asked != who.tenant:
        raise Forbidden("only an admin key reads another tenant's results")
    return who.tenant


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    return token


async def check_request() -> None:
    """The ``before_request`` check: raises `Unauthorized` / `Forbidden` (answered by
    the app's error handler), or records the request's `principal`."""
    from jobsvc.api.services import services

    rule = request.url_rule
    if rule is None:
        return  # no route matched: the 404 / 405 answers, and shows nothing
    decision = decision_for(rule.endpoint)
    assert decision is not None
    if decision.public:
        return
    svc = services()
    if svc.settings.auth == "off":
        g.jobsvc_principal = UNAUTHENTICATED
        return
    token = _bearer(request.headers.get("Authorization"))
    if token is None:
        raise Unauthorized("this request needs an API key: send Authorization: Bearer <token>")
    found = await svc.authenticator.principal(token)
    if found is None:
        raise Unauthorized("the API key is unknown or revoked")
    if decision.scope is not None and not found.allows(decision.scope):
        raise Forbidden(f"this API key lacks the {decision.scope.value} scope")
    g.jobsvc_principal = found


class Authenticator:
    """Key lookups by token hash, cached for ``cache_seconds``; last-used times batched."""

    def __init__(
        self,
        database: Database,
        *,
        cache_seconds: float = CACHE_SECONDS,
        flush_interval: float = FLUSH_SECONDS,
    ) -> None:
        self._database = database
        self._cache_seconds = cache_seconds
        self._flush_interval = flush_interval
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}
        self._used: dict[int, datetime] = {}
        #: Database round trips: lookups and last-used writes (the tests bound them).
        self.lookups = 0
        self.flushes = 0

    async def principal(self, token: str) -> Principal | None:
        """The key's principal, or None for an unknown or revoked token."""
        digest = keys.hash_token(token)
        now = trio.current_time()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            found = cached[1]
        else:
            key = await self._database.run(lambda c: keys.key_by_token_hash(c, digest))
            self.lookups += 1
            found = None if key is None or key.revoked_at is not None else key.principal
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[digest] = (now + self._cache_seconds, found)
        if found is not None and found.key_id is not None:
            self._used[found.key_id] = datetime.now(UTC)
        return found

    async def run(self) -> None:
        """Write the last-used times every ``flush_interval`` seconds, forever. Cancelled,
        it writes what is pending once more (shielded, at most 1 s)."""
        try:
            while True:
                await trio.sleep(self._flush_interval)
                try:
                    await self.flush()
                except DatabaseUnavailable as exc:
                    log.warning("last-used times not written (%s); retrying later", exc)
        finally:
            if self._used:
                with trio.move_on_after(1.0, shield=True):
                    try:
                        await self.flush()
                    except DatabaseUnavailable as exc:
                        log.warning("last-used times of %d keys lost at shutdown: %s", len(self._used), exc)

    async def flush(self) -> None:
        """Write the pending last-used times in one statement."""
        used, self._used = self._used, {}
        if not used:
            return
        try:
            await self._database.run(lambda c: keys.touch_keys(c, used))
        except BaseException:
            for key_id, moment in used.items():  # keep them (the newer time wins)
                self._used[key_id] = max(moment, self._used.get(key_id, moment))
            raise
        self.flushes += 1


blueprint = Blueprint("auth", __name__)


@blueprint.get("/auth/whoami")
@document_response(WhoAmIBody, 200)
@document_response(ErrorBody, 500)
@document_response(ErrorBody, 503)
@authenticated
async def whoami() -> Response:
    """What the token may read: its tenant and scopes (`admin`: every tenant)."""
    who = principal()
    return json_response(
        {
            "tenant": who.tenant,
            "scopes": sorted(s.value for s in who.scopes),
            "readsTenants": None if who.admin else [who.tenant],
        }
    )
