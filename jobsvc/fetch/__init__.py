"""Safe download of untrusted URLs: the security boundary of jobsvc (docs/ARCHITECTURE.md, "The fetcher").

A client names any URL it likes, so every download is checked at four points:

1. the URL, syntactically (`policy.check_url`): http or https only, a host, no
   credentials; for the first hop and every redirect hop (at most 5, a loop is
   refused);
2. the address, at connect time (`guard.GuardedBackend`): every address the
   host resolves to must pass the rule (`is_public_address` unless
   ``allow_private_urls``), and the socket is connected to the address that was
   checked; a kept-alive connection is reused only for a request whose own
   lookup returned its address (`pool.GuardedTransport`);
3. the size (`body`): a Content-Length over ``max_image_bytes`` is refused at
   once; the bytes received and the bytes decoded are counted against the cap
   while streaming;
4. the content (`body.image_kind`): image-ness is decided from the bytes with
   `filetype`, never from Content-Type.

One module per part: `policy` (the rules, pure), `guard` (the network seam),
`body` (streaming, decoding, the magic-byte check, the temporary file for bodies over 256 KiB),
`fetcher` (`Fetcher`, which composes them and translates errors).

Errors (see `jobsvc.errors`)::

    PermanentError   scheme not http(s), credentials in the URL, an invalid URL
                     or host name (bad IDNA, empty or over-long label), a redirect
                     to an unparsable Location, blocked address, a host name
                     that resolves to nothing, 4xx except 408/429, not an image,
                     too large, too many redirects or a loop, an unsupported or
                     corrupt Content-Encoding
    TransientError   timeouts (connect, read, total), connection errors, 5xx,
                     408, 429, a body shorter than its Content-Length,
                     a local temporary file that cannot be written
    InvalidRequest   only from `Fetcher.probe`: "imgUrl is not a reachable image: …"
"""

from jobsvc.fetch.body import ACCEPTED_MIMES
from jobsvc.fetch.fetcher import Download, Fetcher
from jobsvc.fetch.policy import MAX_REDIRECTS, IPAddress, classify_status, is_public_address

__all__ = [
    "ACCEPTED_MIMES",
    "MAX_REDIRECTS",
    "Download",
    "Fetcher",
    "IPAddress",
    "classify_status",
    "is_public_address",
]
