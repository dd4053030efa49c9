"""Settings, read once from ``JOBSVC_*`` environment variables and validated.

Nothing else in jobsvc reads ``os.environ``: every module gets a `Settings`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from jobsvc.errors import ConfigError

T = TypeVar("T")
N = TypeVar("N", int, float)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """Every knob of jobsvc; the README's configuration table documents each one."""

    database_url: str | None = None
    storage_url: str = "file://./.jobsvc/results"
    s3_endpoint_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    concurrency: int = 16
    max_image_bytes: int = 20 * 1024 * 1024
    fetch_timeout: float = 30.0
    connect_timeout: float = 10.0
    probe_timeout: float = 5.0
    max_attempts: int = 3
    allow_private_urls: bool = False
    verify_on_enqueue: bool = True
    rescue_interval: float = 15.0
    shutdown_grace: float = 30.0
    retry_backoff: float = 1.0
    log_format: str = "text"
    log_level: str = "INFO"
    #: One line per HTTP request (method, path without its query string, status, seconds).
    access_log: bool = False
    metrics_port: int | None = None
    worker_id: str = ""
    spool_dir: str | None = None
    #: Seconds a finished row is kept (``JOBSVC_RETENTION``, e.g. ``7d``); 0 keeps it forever.
    retention: float = 7 * 86400.0
    clean_interval: float = 60.0
    #: ``keys``: every route but the public ones needs a bearer token; ``off``: every
    #: request acts as tenant ``default`` with every scope (``jobsvc dev``'s default).
    auth: str = "keys"
    #: Cap on a tenant's Queued + Processing results (``JOBSVC_TENANT_MAX_QUEUED``); 0: none.
    tenant_max_queued: int = 100_000
    #: Requests per second per key and API process (``JOBSVC_RATE_LIMIT``); 0: off.
    rate_limit: float = 0.0

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        defaults: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Read ``JOBSVC_*`` from ``environ`` (default: the process environment).

        ``defaults`` replace the built-in defaults (``jobsvc dev`` allows private
        URLs unless told otherwise); ``overrides`` (command-line flags) win over the
        environment. Raises `ConfigError` naming the variable and the accepted values.
        """
        env = os.environ if environ is None else environ
        r = _Reader(env)
        given = defaults or {}
        values: dict[str, Any] = {
            "database_url": r.get("DATABASE_URL", str, given.get("database_url")),
            "storage_url": r.get("STORAGE_URL", _storage_url, given.get("storage_url", cls.storage_url)),
            "s3_endpoint_url": r.get("S3_ENDPOINT_URL", _http_url, None),
            "host": r.get("HOST", _nonempty, cls.host),
            "port": r.get("PORT", _int_in(0, 65535), cls.port),
            "concurrency": r.get("CONCURRENCY", _int_in(1, 1000), cls.concurrency),
            "max_image_bytes": r.get("MAX_IMAGE_BYTES", _int_in(1, 2**40), cls.max_image_bytes),
            "fetch_timeout": r.get("FETCH_TIMEOUT", _float_in(0.01, 3600), cls.fetch_timeout),
            "connect_timeout": r.get("CONNECT_TIMEOUT", _float_in(0.01, 600), cls.connect_timeout),
            "probe_timeout": r.get("PROBE_TIMEOUT", _float_in(0.01, 600), cls.probe_timeout),
            "max_attempts": r.get("MAX_ATTEMPTS", _int_in(1, 10), cls.max_attempts),
            "allow_private_urls": r.get(
                "ALLOW_PRIVATE_URLS", _bool, given.get("allow_private_urls", cls.allow_private_urls)
            ),
            "verify_on_enqueue": r.get("VERIFY_ON_ENQUEUE", _bool, cls.verify_on_enqueue),
            "rescue_interval": r.get("RESCUE_INTERVAL", _float_in(0.05, 86400), cls.rescue_interval),
            "shutdown_grace": r.get("SHUTDOWN_GRACE", _float_in(0, 86400), cls.shutdown_grace),
            "retry_backoff": r.get("RETRY_BACKOFF", _float_in(0, 3600), cls.retry_backoff),
            "log_format": r.get("LOG_FORMAT", _choice("text", "json"), cls.log_format),
            "log_level": r.get("LOG_LEVEL", _choice("DEBUG", "INFO", "WARNING", "ERROR"), cls.log_level),
            "access_log": r.get("ACCESS_LOG", _bool, cls.access_log),
            "metrics_port": r.get("METRICS_PORT", _int_in(0, 65535), None),
            "worker_id": r.get("WORKER_ID", _nonempty, f"{socket.gethostname()}:{os.getpid()}"),
            "spool_dir": r.get("SPOOL_DIR", _nonempty, None),
            "retention": r.get("RETENTION", parse_duration, cls.retention),
            "clean_interval": r.get("CLEAN_INTERVAL", _float_in(0.05, 86400), cls.clean_interval),
            "auth": r.get("AUTH", _choice("keys", "off"), given.get("auth", cls.auth)),
            "tenant_max_queued": r.get("TENANT_MAX_QUEUED", _int_in(0, 10**9), cls.tenant_max_queued),
            "rate_limit": r.get("RATE_LIMIT", _in_range(float, 0.0, 1e6, "a number"), cls.rate_limit),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError(
                "JOBSVC_DATABASE_URL is not set: give a PostgreSQL URI "
                "(postgresql://user@host/db), or run `jobsvc dev` for an embedded one"
            )
        return self.database_url


#: Every variable `Settings.from_env` understands (used by the compose test and the README).
KNOWN_VARIABLES = frozenset(
    "JOBSVC_" + name
    for name in [
        *("DATABASE_URL", "STORAGE_URL", "S3_ENDPOINT_URL", "HOST", "PORT", "CONCURRENCY"),
        *("MAX_IMAGE_BYTES", "FETCH_TIMEOUT", "CONNECT_TIMEOUT", "PROBE_TIMEOUT", "MAX_ATTEMPTS"),
        *("ALLOW_PRIVATE_URLS", "VERIFY_ON_ENQUEUE", "RESCUE_INTERVAL", "SHUTDOWN_GRACE"),
        *("RETRY_BACKOFF", "LOG_FORMAT", "LOG_LEVEL", "METRICS_PORT", "WORKER_ID", "TEST_DATABASE_URL"),
        *(
            "SPOOL_DIR",
            "RETENTION",
            "CLEAN_INTERVAL",
            "ACCESS_LOG",
            "AUTH",
            "TENANT_MAX_QUEUED",
            "RATE_LIMIT",
        ),
    ]
)


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        var = "JOBSVC_" + name
        raw = self._env.get(var)
        if raw is None or (raw.strip() == "" and parse is not _bool):
            return default
        try:
            return parse(raw.strip())
        except ValueError as exc:
            raise ConfigError(f"{var}={raw!r:.100} is invalid: {exc}") from None


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(raw: str) -> float:
    """Seconds in ``7d``, ``12h``, ``30m``, ``45s`` or ``0`` (for retention: keep forever)."""
    text = raw.strip().lower()
    if text == "0":
        return 0.0
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError("expected a duration such as 7d, 12h, 30m or 45s, or 0")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not 0 < seconds <= 100 * 365 * 86400:
        raise ValueError("expected a duration above 0 and up to 100 years, or 0 (keep forever)")
    return seconds


def _bool(raw: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected true or false")


def _nonempty(raw: str) -> str:
    if not raw:
        raise ValueError("must not be empty")
    return raw


def _in_range(convert: Callable[[str], N], low: N, high: N, expected: str) -> Callable[[str], N]:
    """A parser: ``convert`` the text, then refuse a value outside ``[low, high]``."""
    message = f"expected {expected} between {low} and {high}"

    def parse(raw: str) -> N:
        try:
            value = convert(raw)
        except ValueError:
            raise ValueError(message) from None
        if not low <= value <= high:  # also refuses nan
            raise ValueError(message)
        return value

    return parse


def _int_in(low: int, high: int) -> Callable[[str], int]:
    return _in_range(int, low, high, "an integer")


def _float_in(low: float, high: float) -> Callable[[str], float]:
    return _in_range(float, low, high, "a number of seconds")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        for choice in choices:
            if raw.lower() == choice.lower():
                return choice
        raise ValueError("expected one of " + ", ".join(choices))

    return parse


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http(s) URL such as http://127.0.0.1:9000")
    return raw


def _storage_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError("expected s3://bucket[/prefix]")
        return raw
    if parts.scheme == "file":
        if not (parts.netloc + parts.path):
            raise ValueError("expected file:///absolute/dir or file://./relative/dir")
        return raw
    raise ValueError("expected s3://bucket[/prefix] or file:///dir")
