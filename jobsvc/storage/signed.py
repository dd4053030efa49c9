"""`SignedPut`: a small object's PUT without botocore's per-call machinery, and without a thread.

boto3's ``put_object`` spends most of its CPU outside the upload itself (the event
system, parameter handling, endpoint rules, urllib3) and must run in a thread, which
cannot be cancelled. For the small results kept in memory, `SignedPut` signs the PUT
with botocore's own SigV4 signer (`S3SigV4Auth`, the same credentials object the
client uses) and sends it with httpcore on trio. Everything else stays boto3's:

- the object URL is the one boto3 builds (read once from a presigned URL of the bucket:
  path or virtual-host style, endpoint, region);
- anything but a plain 2xx (an error status, a redirect, a transport error, a TLS
  setting botocore knows and httpcore does not) makes `put` return False, and the
  caller (`S3Storage.put_bytes`) does that PUT with boto3 instead, with its retries,
  redirects and error messages. An answer other than 2xx, or `_GIVE_UP` failures in a
  row without one, and the caller stops using this path (`usable`; logged once): a
  network blip costs one fallback, a store that wants something else costs one;
- credentials that need a refresh are refreshed in a thread (a refresh may call out);
- an endpoint reached through a proxy (boto3's Config or the environment) is left to
  boto3 entirely, and so is one whose certificates boto3 does not verify (``verify=False``);
- TLS trusts what the client trusts: its CA bundle (``AWS_CA_BUNDLE``, ``ca_bundle`` in
  the AWS config, or botocore's default), read from the client once.

Cancellation: the PUT is cancellable mid-flight (the connection is closed); the
caller deletes the object again, shielded, since it may have landed.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit
from urllib.request import getproxies, proxy_bypass

import httpcore
import trio
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import RefreshableCredentials

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["SignedPut"]

log = logging.getLogger(__name__)

#: As the client's Config (s3.py): connect 10 s, read 60 s.
_TIMEOUTS = {"connect": 10.0, "read": 60.0, "write": 60.0, "pool": 60.0}
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Failed signed PUTs in a row (no answer at all) after which boto3 does every PUT.
_GIVE_UP = 3


class SignedPut:
    """PUTs of small bodies to one bucket, signed like boto3's and sent from trio."""

    def __init__(
        self, base_url: str, credentials: Any, region: str, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._base_url = base_url  # the object URL without the key: ".../bucket/" or "https://bucket.host/"
        parts = urlsplit(base_url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
            host = f"{host}:{parts.port}"
        self._host = host  # signed and sent: the same string
        self._credentials = credentials
        self._region = region
        self.ssl_context = ssl_context or ssl.create_default_context()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=self.ssl_context, max_connections=64, keepalive_expiry=5.0
        )
        self._failures = 0  # in a row

    @classmethod
    def for_client(cls, client: S3Client, credentials: Any, bucket: str) -> SignedPut | None:
        """The fast path for ``bucket`` through ``client``'s endpoint, or None when it does not
        apply (no credentials, not SigV4, a URL boto3 builds in a way we do not expect).
        Blocking (it asks boto3 to build a URL): call it from a thread."""
        if credentials is None or getattr(client.meta.config, "signature_version", None) != "s3v4":
            return None
        probe = "jobsvc-probe"
        url = client.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": probe})
        base = url.split("?", 1)[0]
        parts = urlsplit(base)
        if not base.endswith("/" + probe) or parts.scheme not in _DEFAULT_PORTS:
            return None
        # boto3 goes through a proxy when one is configured (its Config or the environment,
        # as urllib reads it); httpcore here would not: leave those endpoints to boto3.
        if getattr(client.meta.config, "proxies", None) or (
            parts.scheme in getproxies() and not proxy_bypass(parts.hostname or "")
        ):
            return None
        # What boto3 verifies certificates against: a CA bundle's path, or False (not at all;
        # this path does not copy that). botocore keeps it on the endpoint's HTTP session.
        verify = getattr(getattr(getattr(client, "_endpoint", None), "http_session", None), "_verify", True)
        if verify is False:
            return None
        context = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else None
        return cls(base[: -len(probe)], credentials, client.meta.region_name, context)

    @property
    def usable(self) -> bool:
        """False once a store answered a signed PUT with anything but 2xx, or after
        `_GIVE_UP` failures in a row (transport, TLS, credentials): boto3 for good then."""
        return self._failures < _GIVE_UP

    async def put(self, name: str, data: bytes, content_type: str) -> bool:
        """PUT ``data`` as object ``name``; True once the store answered 2xx, False on anything
        else (the caller falls back to boto3). Cancellable: see the module docstring."""
        url = self._base_url + quote(name, safe="/~")  # as botocore encodes a key in the path
        try:
            headers = await self._signed_headers(url, data, content_type)
            response = await self._pool.request(
                "PUT", url, headers=headers, content=data, extensions={"timeout": _TIMEOUTS}
            )
        except Exception as exc:  # transport, TLS, a failed credentials refresh: boto3 will say why
            self._failures += 1
            log.warning("a signed PUT of %s failed (%s): boto3 does it", name, exc)
            return False
        if 200 <= response.status <= 299:
            self._failures = 0
            return True
        self._failures = _GIVE_UP  # the store refuses what boto3 would do differently: leave it to boto3
        log.warning("a signed PUT of %s answered %d: boto3 does it", name, response.status)
        return False

    async def _signed_headers(self, url: str, data: bytes, content_type: str) -> list[tuple[str, str]]:
        credentials = self._credentials
        if isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed():
            frozen = await trio.to_thread.run_sync(credentials.get_frozen_credentials)
        else:
            frozen = credentials.get_frozen_credentials()
        request = AWSRequest(
            method="PUT",
            url=url,
            data=data,
            headers={"Host": self._host, "Content-Type": content_type, "Content-Length": str(len(data))},
        )
        # Adds X-Amz-Date, X-Amz-Content-SHA256 (the body's SHA-256: no Content-MD5 here, so
        # botocore signs the payload), a session token if any, and Authorization.
        S3SigV4Auth(frozen, "s3", self._region).add_auth(request)
        return list(request.headers.items())

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await self._pool.aclose()
