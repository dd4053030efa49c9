"""API keys and tenants: tokens, their hashes, scopes, and the rows of ``jobsvc_keys``.

A token is ``jobsvc_`` followed by `secrets.token_urlsafe(32)` (256 random bits).
Only its SHA-256 is stored: a token that random cannot be found from its hash by
guessing, so a fast hash is enough (a slow password hash protects low-entropy
secrets), and authenticating a request is one indexed lookup by hash. The prefix
lets secret scanners and log greps recognise a leaked token.

Scopes (README, "Security"): ``enqueue`` (enqueue, batch), ``read`` (list, get,
download, events, stats), ``cancel`` (cancel, retry) and ``admin`` (every scope,
for every tenant). A `Principal` is who a request acts as: a tenant and scopes.

Keys are managed on the database directly (`jobsvc keys create | list | revoke`),
never over HTTP: whoever can write to the database owns the service anyway.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobsvc.db import Conn
from jobsvc.errors import ConfigError, NotFound
from jobsvc.model import DEFAULT_TENANT
from jobsvc.queries import CREATE_KEY_SQL, KEY_BY_HASH_SQL, LIST_KEYS_SQL, REVOKE_KEY_SQL, TOUCH_KEYS_SQL

__all__ = [
    "DEFAULT_TENANT",
    "TOKEN_PREFIX",
    "ApiKey",
    "Principal",
    "Scope",
    "create_key",
    "hash_token",
    "key_by_token_hash",
    "list_keys",
    "new_token",
    "parse_scopes",
    "revoke_key",
    "touch_keys",
]

TOKEN_PREFIX = "jobsvc_"
#: The tenant of every row written before tenants existed, and of JOBSVC_AUTH=off.
#: The tenant names `jobsvc keys create` accepts (the same CHECK is in schema.sql).
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Scope(enum.StrEnum):
    """What a key may do; mirrors the CHECK on ``jobsvc_keys.scopes`` in schema.sql."""

    ENQUEUE = "enqueue"
    READ = "read"
    CANCEL = "cancel"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as. ``key_id`` is None when authentication is off."""

    tenant: str
    scopes: frozenset[Scope]
    key_id: int | None = None

    @property
    def admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    def allows(self, scope: Scope) -> bool:
        return self.admin or scope in self.scopes

    @property
    def reads(self) -> str | None:
        """The tenant filter of this principal's reads: its tenant, or None (every tenant)."""
        return None if self.admin else self.tenant


#: JOBSVC_AUTH=off: every request acts as tenant ``default`` with every scope.
UNAUTHENTICATED = Principal(DEFAULT_TENANT, frozenset(Scope))


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A row of ``jobsvc_keys`` (never the token, which is not stored)."""

    id: int
    tenant: str
    scopes: tuple[Scope, ...]
    label: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ApiKey:
        fields = dict(row)
        fields["scopes"] = tuple(Scope(s) for s in fields["scopes"])
        return cls(**{name: fields[name] for name in cls.__slots__})

    @property
    def principal(self) -> Principal:
        return Principal(self.tenant, frozenset(self.scopes), self.id)


def new_token() -> str:
    """A fresh token: the prefix and 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    """What is stored and looked up: SHA-256 of the token's UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def check_tenant(tenant: str) -> str:
    if not _TENANT.fullmatch(tenant):
        raise ConfigError(
            "a tenant is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return tenant


def parse_scopes(given: Iterable[str]) -> tuple[Scope, ...]:
    """Scopes from comma-separated words (``enqueue,read``); `ConfigError` for an unknown one."""
    chosen: list[Scope] = []
    for word in (w.strip().lower() for g in given for w in g.split(",")):
        if not word:
            continue
        try:
            chosen.append(Scope(word))
        except ValueError:
            raise ConfigError(
                f"unknown scope {word!r:.40}: expected {', '.join(s.value for s in Scope)}"
            ) from None
    if not chosen:
        raise ConfigError("a key needs at least one scope")
    return tuple(dict.fromkeys(chosen))


def create_key(
    conn: Conn, tenant: str, scopes: Sequence[Scope], label: str | None = None
) -> tuple[ApiKey, str]:
    """A new key of ``tenant``; returns the row and the token (shown once, never stored)."""
    token = new_token()
    params = {
        "tenant": check_tenant(tenant),
        "scopes": [s.value for s in scopes],
        "label": label,
        "token_hash": hash_token(token),
    }
    row = conn.execute(CREATE_KEY_SQL, params).fetchone()
    assert row is not None
    return ApiKey.from_row(row), token


def list_keys(conn: Conn) -> list[ApiKey]:
    return [ApiKey.from_row(r) for r in conn.execute(LIST_KEYS_SQL)]


def revoke_key(conn: Conn, key_id: int) -> ApiKey:
    """Revoke a key (idempotent: a revoked key keeps its first revocation time)."""
    row = conn.execute(REVOKE_KEY_SQL, {"id": key_id}).fetchone()
    if row is None:
        raise NotFound(f"there is no key {key_id}")
    return ApiKey.from_row(row)


def key_by_token_hash(conn: Conn, token_hash: bytes) -> ApiKey | None:
    row = conn.execute(KEY_BY_HASH_SQL, {"token_hash": token_hash}).fetchone()
    return None if row is None else ApiKey.from_row(row)


def touch_keys(conn: Conn, used: dict[int, datetime]) -> None:
    """Record when each key was last used, in one statement (the API's batched write)."""
    if used:
        ids = list(used)
        conn.execute(TOUCH_KEYS_SQL, {"ids": ids, "used": [used[i] for i in ids]})
