"""The job row, its statuses and result-file naming. Pure: no I/O. (The JSON view of a
row is `jobsvc.schemas.JobView`.)"""

from __future__ import annotations

import enum
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from jobsvc.errors import InvalidRequest, quoted

MAX_URL_LENGTH = 2048
MAX_TYPE_LENGTH = 64
MAX_FILE_NAME_BYTES = 255
MAX_HOST_LENGTH = 253  # a DNS name, without its trailing dot (RFC 1035)
MAX_LABEL_LENGTH = 63
#: The tenant of rows from before tenants existed, and of every request with auth off.
DEFAULT_TENANT = "default"


class Status(enum.StrEnum):
    """Mirrors the CHECK constraint on ``jobsvc_results.status`` in schema.sql."""

    QUEUED = "Queued"
    PROCESSING = "Processing"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def finished(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELED)


@dataclass(frozen=True, slots=True)
class Job:
    """One result row of ``jobsvc_results``; ``id`` is also its advisory-lock key."""

    id: int
    job_id: uuid.UUID
    result_file: str
    type: str
    img_url: str
    status: Status
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    error: str | None
    cancel_requested_at: datetime | None
    worker_id: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: The tenant of the key that enqueued it (README, "Security"); rows from before
    #: tenants existed belong to ``default``.
    tenant: str = DEFAULT_TENANT

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        fields = dict(row)
        fields["status"] = Status(fields["status"])
        # A row read before schema version 3 has no tenant: it is `default`'s.
        return cls(**{name: fields[name] for name in cls.__slots__ if name in fields})

    @property
    def duration_ms(self) -> int | None:
        """Milliseconds from creation to the final status; None while unfinished."""
        if self.finished_at is None:
            return None
        return int((self.finished_at - self.created_at).total_seconds() * 1000)

    @property
    def run_ms(self) -> int | None:
        """Milliseconds from the start of the last attempt (its claim) to the final status;
        None while unfinished or when it never started (canceled while Queued). Unlike
        `duration_ms`, a delay (``runAt``) or retry backoff is not in it."""
        if self.finished_at is None or self.started_at is None:
            return None
        return int((self.finished_at - self.started_at).total_seconds() * 1000)

    @property
    def storage_key(self) -> str:
        """Results of different jobs never overwrite each other: the key is per job."""
        return f"{self.job_id}/{self.result_file}"


def epoch_ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def parse_job_id(text: str) -> uuid.UUID:
    """A job id is a UUID in any standard spelling, never the nil UUID."""
    try:
        value = uuid.UUID(text)
    except (ValueError, TypeError, AttributeError):
        raise InvalidRequest(f"jobId must be a UUID, got {quoted(text)}") from None
    if value.int == 0:
        raise InvalidRequest("jobId must not be the nil UUID")
    return value


#: A plain ASCII file name: printable, no separator, no space at either end. Every such
#: name (but ``.`` and ``..``, up to `MAX_FILE_NAME_BYTES`) passes every rule of
#: `check_file_name`; the per-character Unicode scan is for the others.
_PLAIN_FILE_NAME = re.compile(r"[!-.0-\[\]-~](?:[ -.0-\[\]-~]*[!-.0-\[\]-~])?")


def check_file_name(name: str) -> str:
    """Refuse names that are unusable as one path segment on any storage backend.

    A result file is always stored under ``{jobId}/``: no separator, no dot
    segment and no control character may let it escape or hide there. The one
    rule for a result-file name wherever it comes from: the enqueued URL, or the
    ``{resultFile}`` of a path (a name this refuses can never have been stored).
    """
    # The common case, accepted without the scan: a fast path that only ever accepts
    # (anything else, good or bad, takes the thorough path and its error sentences).
    if len(name) <= MAX_FILE_NAME_BYTES and name not in (".", "..") and _PLAIN_FILE_NAME.fullmatch(name):
        return name
    return _check_file_name_thoroughly(name)


def _check_file_name_thoroughly(name: str) -> str:
    if not name or name in (".", ".."):
        raise InvalidRequest("the result file name must be a file name (the URL's last path segment)")
    if "/" in name or "\\" in name:
        raise InvalidRequest("the result file name must not contain a path separator")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in name):
        raise InvalidRequest("the result file name must not contain control characters")
    if name != name.strip():
        raise InvalidRequest("the result file name must not start or end with whitespace")
    if len(name.encode("utf-8")) > MAX_FILE_NAME_BYTES:
        raise InvalidRequest(f"the result file name is longer than {MAX_FILE_NAME_BYTES} bytes")
    return name


def result_file_from_url(url: str) -> str:
    """The last path segment of ``url``, percent-decoded, without query or fragment.

    ``https://h/a/results_2.png?X-Amz-Expires=60`` → ``results_2.png``.
    """
    # A URL of the plain shape: its path is the regex's group, as urlsplit would split it.
    plain = _PLAIN_URL.fullmatch(url)
    return _file_from_path(urlsplit(url).path if plain is None else plain["path"] or "")


def _file_from_path(path: str) -> str:
    segment = path.rsplit("/", 1)[-1]
    try:
        name = unquote(segment, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidRequest("the URL's file name is not valid UTF-8 once decoded") from None
    return check_file_name(name)


#: A plain http(s) URL: lowercase scheme; an ASCII host name whose last label ends in a
#: letter (so httpx does not take it for an IPv4 address) and has no ``xn--`` (no IDNA
#: to decode), or a dotted-quad IPv4 address in its canonical spelling (one httpx's
#: IPv4 check takes); an optional port from 1; and a path, query and fragment of RFC
#: 3986 characters only. Such a URL passes every check of `check_image_url`
#: (tests/unit/test_url_fast_path.py compares the two on generated URLs); the thorough
#: path, which parses the URL twice (urlsplit, then httpx as the fetcher will), is for
#: the rest.
_PLAIN_URL = re.compile(
    r"https?://"
    r"(?P<host>(?:[A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{0,62}[A-Za-z]\.?"
    r"|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]))"
    r"(?::(?P<port>[1-9][0-9]{0,4}))?"
    r"(?P<path>/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*)?"
    r"(?:[?#][A-Za-z0-9\-._~!$&'()*+,;=:@/?#%]*)?"
)


def check_image_url(url: str) -> str:
    """Syntactic checks of a client's URL (addresses are checked when fetching)."""
    # The common case, accepted without parsing: the fast path only ever accepts; any
    # URL it does not recognise, good or bad, takes the thorough path (same verdicts,
    # same sentences). SSRF rules are not here: they apply to addresses, when fetching.
    return url if _plain_image_url(url) is not None else _check_image_url_thoroughly(url)


def image_url_and_file(url: str) -> tuple[str, str]:
    """`check_image_url` and `result_file_from_url` of ``url`` at once (same verdicts, same
    sentences): a plain URL is matched once instead of once per check, ~1 µs of an
    enqueue's judgement, which a batch makes up to 1,000 times per request."""
    plain = _plain_image_url(url)
    if plain is None:
        url = _check_image_url_thoroughly(url)
        return url, result_file_from_url(url)
    return url, _file_from_path(plain["path"] or "")


def _plain_image_url(url: str) -> re.Match[str] | None:
    """``url``'s `_PLAIN_URL` match when it passes every check of `check_image_url`."""
    if len(url) <= MAX_URL_LENGTH and (plain := _PLAIN_URL.fullmatch(url)) is not None:
        host, port = plain["host"], plain["port"]
        if (
            len(host.removesuffix(".")) <= MAX_HOST_LENGTH
            and "xn--" not in host.lower()
            and (port is None or int(port) <= 65535)
        ):
            return plain
    return None


def _check_image_url_thoroughly(url: str) -> str:
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"imgUrl is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise InvalidRequest("imgUrl must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest(f"imgUrl is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest("imgUrl must be an absolute http or https URL")
    if not parts.hostname:
        raise InvalidRequest("imgUrl must name a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("imgUrl must not carry credentials")
    if port == 0:
        raise InvalidRequest("imgUrl must not use port 0")
    _check_host(url)
    return url


def _check_host(url: str) -> None:
    """The host as the fetcher will see it (httpx parses it) must be a name DNS can hold.

    A host httpx cannot parse or IDNA-decode (``xn--zz``), an empty label
    (``a..b``) or an over-long one can never be fetched: refused here, at enqueue.
    """
    # Imported here: the CLI imports this module for `Status`, and ``jobsvc --version``
    # must not wait for httpx.
    import httpx

    try:
        parsed = httpx.URL(url)
        parsed.host  # noqa: B018 (IDNA-decodes the host: raises on an invalid A-label)
    except httpx.InvalidURL as exc:
        raise InvalidRequest(f"imgUrl is not a valid URL: {exc}") from None
    except UnicodeError as exc:  # idna.IDNAError
        raise InvalidRequest(f"imgUrl's host is not a valid internationalized domain name: {exc}") from None
    host = parsed.raw_host.decode("ascii")
    if ":" in host:
        return  # an IPv6 literal
    name = host.removesuffix(".")
    if len(name) > MAX_HOST_LENGTH:
        raise InvalidRequest(f"imgUrl's host name is longer than {MAX_HOST_LENGTH} characters")
    for label in name.split("."):
        if not label:
            raise InvalidRequest("imgUrl's host name has an empty label")
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidRequest(f"imgUrl's host name has a label longer than {MAX_LABEL_LENGTH} characters")
