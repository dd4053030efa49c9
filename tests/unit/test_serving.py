"""jobsvc/serving.py's adapters on hypercorn: a length-framed response leaves in one socket
write, an event stream's head leaves at once, the last send of a response is shielded,
and the patched hypercorn methods are the ones they were written against (a hypercorn
upgrade that changes them fails here, not in production)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
from typing import Any

import h11
import pytest
import trio
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.protocol.events import Body, EndBody, Response
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.worker_context import WorkerContext

from jobsvc import serving

#: The hypercorn methods the patches stand in for, as of the pinned version.
_REPLACED = {"_send_h11_event": "5e40283daa303ec7", "_send_error_response": "58c2b47ae295d000"}


def _protocol(sent: list[Any]) -> H11Protocol:
    async def send(event: Any) -> None:
        sent.append(event)

    protocol = H11Protocol(
        None,  # type: ignore[arg-type]  # no app: the tests drive stream_send directly
        Config(),
        WorkerContext(None),
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        False,
        None,
        None,
        send,
    )
    protocol.connection.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(protocol.connection.next_event(), h11.Request)
    assert isinstance(protocol.connection.next_event(), h11.EndOfMessage)
    return protocol


def _writes(sent: list[Any]) -> list[bytes]:
    return [event.data for event in sent if isinstance(event, RawData)]


def test_the_patched_hypercorn_methods_are_the_pinned_ones() -> None:
    serving.install_json_protocol_errors()
    serving.install_one_write_responses()
    assert importlib.metadata.version("hypercorn") == "0.18.0"
    for name, digest in _REPLACED.items():
        original = getattr(H11Protocol, name)._jobsvc_replaces
        assert hashlib.sha256(inspect.getsource(original).encode()).hexdigest()[:16] == digest, name


def test_install_one_write_responses_is_idempotent() -> None:
    serving.install_one_write_responses()
    patched = H11Protocol._send_h11_event
    serving.install_one_write_responses()
    assert H11Protocol._send_h11_event is patched


async def test_a_length_framed_response_leaves_in_one_write() -> None:
    serving.install_one_write_responses()
    sent: list[Any] = []
    protocol = _protocol(sent)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
    await protocol.stream_send(Response(stream_id=1, headers=headers, status_code=202))
    assert _writes(sent) == []  # the head waits for its body
    await protocol.stream_send(Body(stream_id=1, data=b'{"a":"xyz"}'))
    await protocol.stream_send(EndBody(stream_id=1))
    [write] = _writes(sent)  # and the end of the message writes nothing
    assert write.startswith(b"HTTP/1.1 202 \r\n") and write.endswith(b'\r\n\r\n{"a":"xyz"}')
    assert b"content-length: 11\r\n" in write
    assert protocol.connection.our_state is h11.DONE


async def test_an_empty_length_framed_response_leaves_with_its_end() -> None:
    serving.install_one_write_responses()
    sent: list[Any] = []
    protocol = _protocol(sent)
    await protocol.stream_send(Response(stream_id=1, headers=[(b"content-length", b"0")], status_code=304))
    assert _writes(sent) == []
    await protocol.stream_send(EndBody(stream_id=1))
    [write] = _writes(sent)
    assert write.startswith(b"HTTP/1.1 304 ") and write.endswith(b"\r\n\r\n")


async def test_a_response_without_content_length_sends_its_head_at_once() -> None:
    serving.install_one_write_responses()
    sent: list[Any] = []
    protocol = _protocol(sent)
    await protocol.stream_send(
        Response(stream_id=1, headers=[(b"content-type", b"text/event-stream")], status_code=200)
    )
    [head] = _writes(sent)  # an event stream's client sees it open before the first event
    assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower()
    await protocol.stream_send(Body(stream_id=1, data=b": connected\n\n"))
    await protocol.stream_send(EndBody(stream_id=1))
    assert _writes(sent)[1:] == [b"d\r\n: connected\n\n\r\n", b"0\r\n\r\n"]


async def _cancelled_sends(messages: list[dict[str, Any]]) -> list[str]:
    """Send ``messages`` through `shield_sends` from an already-cancelled app; the types of
    those whose send ran to its end."""
    finished: list[str] = []

    async def server_send(message: Any) -> None:
        await trio.lowlevel.checkpoint()  # where hypercorn's end-of-response path checkpoints
        finished.append(message["type"] + ("+more" if message.get("more_body") else ""))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with trio.CancelScope() as scope_:
            scope_.cancel()
            for message in messages:
                with pytest.raises(trio.Cancelled) if message is not messages[-1] else _nothing():
                    await send(message)

    await serving.shield_sends(app)({"type": "http"}, None, server_send)  # type: ignore[arg-type]
    return finished


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def test_the_last_send_of_a_response_runs_to_its_end_when_the_app_is_cancelled() -> None:
    messages = [
        {"type": "http.response.start", "status": 200, "headers": []},
        {"type": "http.response.body", "body": b"x", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]
    # The start and the body chunks stop at the socket write (hypercorn shields the
    # write itself); the last message runs hypercorn's end-of-response path: shielded.
    assert await _cancelled_sends(messages) == ["http.response.body"]
