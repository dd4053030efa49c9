"""How the API sits on hypercorn: connection lifetimes and protocol errors.

See docs/ARCHITECTURE.md, "Serving the API".

Two adapters, both installed by `jobsvc.cli.serve_api`:

- `shield_sends` wraps the ASGI app so that every ``send`` of an HTTP response
  runs to completion. quart-trio 0.12 cancels its per-request nursery as soon as
  hypercorn reports the stream closed, while the request task is still inside
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
    """``app`` with each HTTP ``send`` shielded from the app's own cancellation."""

    async def shielded_app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def shielded_send(message: ASGISendEvent) -> None:
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
    H11Protocol._send_error_response = _send_error_response  # type: ignore[method-assign]


__all__ = ["KEEP_ALIVE_TIMEOUT", "install_json_protocol_errors", "protocol_error_body", "shield_sends"]
