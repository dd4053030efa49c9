"""How the API sits on hypercorn: connection lifetimes and protocol errors.

See docs/ARCHITECTURE.md, "Serving the API".

Three adapters, all installed by `jobsvc.cli.serve_api`:

- `shield_sends` wraps the ASGI app so that the last ``send`` of an HTTP response
  (its final body message) runs to completion. quart-trio 0.12 cancels its
  per-request nursery as soon as hypercorn reports the stream closed, while the request task is still inside
  ``send``: hypercorn 0.18 runs its whole end-of-response path in that call
  (``TCPServer._close`` for ``Connection: close`` and HTTP/1.0, re-arming the
  keep-alive idle timer otherwise), and the cancellation landed at its first
  checkpoint. The socket was never closed and idle connections never timed out
  (docs/upstream-quart-trio-connections.md has the reproduction). Hypercorn
  already shields the socket write itself, so the shield adds no new blocking.
- `install_json_protocol_errors` makes the errors hypercorn answers by itself,
  before the app sees a request (a garbage request line, a bad chunk, no Host
  header, headers over ``h11_max_incomplete_size``), carry ``{"error": ...}``
  JSON like every other error, instead of an empty body.
- `install_one_write_responses` makes a response whose length is known (a
  ``Content-Length``: every answer but an event stream) leave in one socket write,
  where hypercorn wrote its head, its body and its (empty) end separately.

The two patches replace methods of hypercorn's ``H11Protocol``: hypercorn is pinned
(pyproject.toml) and tests/unit/test_serving.py fails if the methods they stand in
for change.
"""

from __future__ import annotations

import json
import sys
from itertools import chain
from typing import Any

import h11
import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope

#: Seconds an idle keep-alive connection (or one that never sends a request) stays open.
#: An open response (an SSE stream) is not idle: hypercorn stops the timer while one runs.
#: Longer than the idle expiry of the clients' pools (httpx and so jobsvc.client: 5 s),
#: so a client always drops an idle connection before the server does. At 5 s, equal to
#: httpx's, a client whose event loop lagged picked a connection the server was closing
#: and its POST failed without an answer (ReadError under `python -m bench http`).
KEEP_ALIVE_TIMEOUT = 8.0


def shield_sends(app: ASGIFramework) -> ASGIFramework:
    """``app`` with each HTTP response's last ``send`` shielded from the app's own cancellation."""

    async def shielded_app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def shielded_send(message: ASGISendEvent) -> None:
            # Only the response's last message runs hypercorn's end-of-response path; the
            # others stop at the socket write, which hypercorn shields itself (a cancel
            # there means the client left or the response timed out: nothing to finish).
            # A shield costs ~7 µs, three messages per response.
            if message["type"] != "http.response.body" or message.get("more_body", False):
                await send(message)
                return
            # Cancellation still reaches the app at its next checkpoint after this send.
            with trio.CancelScope(shield=True):
                await send(message)

        await app(scope, receive, shielded_send)

    return shielded_app


_SENTENCES = {
    400: "the request is not valid HTTP/1.1",
    408: "the request took too long to arrive",
    413: "the request is too large",
    414: "the request line is too long",
    431: "the request headers are too large",
}


def protocol_error_body(status: int, detail: str | None) -> bytes:
    """The JSON body of a protocol-level error: a sentence, with h11's reason when known."""
    sentence = _SENTENCES.get(status, "the request could not be parsed")
    if detail:
        sentence = f"{sentence}: {detail}"
    return json.dumps({"error": sentence}).encode()


def install_json_protocol_errors() -> None:
    """Make hypercorn's HTTP/1.1 protocol-error responses JSON (idempotent).

    Hypercorn builds these in ``H11Protocol._send_error_response`` (content-length 0,
    ``Connection: close``) and offers no hook, so the method is replaced on the class.
    It is called from the ``except h11.RemoteProtocolError`` block that caught the
    error, so the exception (h11's reason) is still ``sys.exc_info()``.
    """
    from hypercorn.protocol.h11 import H11Protocol

    if getattr(H11Protocol._send_error_response, "_jobsvc_json", False):
        return

    async def _send_error_response(self: Any, status_code: int) -> None:
        error = sys.exc_info()[1]
        detail = str(error) if isinstance(error, h11.RemoteProtocolError) else None
        body = protocol_error_body(status_code, detail)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        response = h11.Response(
            status_code=status_code, headers=list(chain(headers, self.config.response_headers("h11")))
        )
        await self._send_h11_event(response)
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())

    _send_error_response._jobsvc_json = True  # type: ignore[attr-defined]
    _send_error_response._jobsvc_replaces = H11Protocol._send_error_response  # type: ignore[attr-defined]
    H11Protocol._send_error_response = _send_error_response  # type: ignore[method-assign]


def install_one_write_responses() -> None:
    """Send a length-framed response's head with its body, in one socket write (idempotent).

    Hypercorn's ``H11Protocol._send_h11_event`` writes each h11 event as it comes: the
    head, then the body, then the end of the message (no bytes with a Content-Length,
    but still a pass through the connection's send lock and trio's socket send). Each
    write is a ``send`` system call plus two trio scheduling points (the lock and the
    socket), and the client wakes up for a head without its body. Here the head of a
    response framed by Content-Length is kept until the body (or the end of the
    message, for an empty body) and written with it, and an event with no bytes writes
    nothing. A response without Content-Length (an event stream, chunked) sends its head
    at once, as before: it may be a long time before its first body bytes exist. (A
    response abandoned between its head and its body, which hypercorn answers by closing
    the connection, now closes it without sending the head: truncated either way.)
    """
    from hypercorn.events import RawData
    from hypercorn.protocol.h11 import H11Protocol

    if getattr(H11Protocol._send_h11_event, "_jobsvc_one_write", False):
        return

    async def _send_h11_event(self: Any, event: Any) -> None:
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:  # as hypercorn: ignored once the peer broke the protocol
            if self.connection.their_state != h11.ERROR:
                raise
            return
        held: bytes | None = self.__dict__.pop("_jobsvc_head", None)
        if held is not None:
            data = held + (data or b"")
        elif type(event) is h11.Response and _length_framed(event):
            self._jobsvc_head = data  # written with the body, or the end of an empty one
            return
        if data:
            await self.send(RawData(data=data))

    _send_h11_event._jobsvc_one_write = True  # type: ignore[attr-defined]
    _send_h11_event._jobsvc_replaces = H11Protocol._send_h11_event  # type: ignore[attr-defined]
    H11Protocol._send_h11_event = _send_h11_event  # type: ignore[method-assign]


def _length_framed(response: h11.Response) -> bool:
    return any(name == b"content-length" for name, _ in response.headers)


__all__ = [
    "KEEP_ALIVE_TIMEOUT",
    "install_json_protocol_errors",
    "install_one_write_responses",
    "protocol_error_body",
    "shield_sends",
]
