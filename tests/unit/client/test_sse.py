"""jobsvc.client.sse: the WHATWG event-stream interpretation, line by line."""

from __future__ import annotations

from jobsvc.client.sse import SSEEvent, SSEParser


def test_sse_parser_dispatches_on_blank_line_with_event_name_and_id() -> None:
    events = SSEParser().feed_all(["event: job", "id: 7-100", 'data: {"a":1}', ""])
    assert events == [SSEEvent("job", '{"a":1}', "7-100")]


def test_sse_parser_joins_multi_line_data_with_newlines() -> None:
    events = SSEParser().feed_all(["data: first", "data:second", "data:  third", ""])
    assert events == [SSEEvent("message", "first\nsecond\n third", "")]


def test_sse_parser_skips_comments_and_heartbeats() -> None:
    lines = [": connected", "", ": heartbeat", "", "event: job", ": between", "data: x", ""]
    assert SSEParser().feed_all(lines) == [SSEEvent("job", "x", "")]


def test_sse_parser_blank_line_without_data_dispatches_nothing_and_resets_event_name() -> None:
    assert SSEParser().feed_all(["event: job", "", "data: x", ""]) == [SSEEvent("message", "x", "")]


def test_sse_parser_id_persists_across_events_and_nul_ids_are_ignored() -> None:
    parser = SSEParser()
    events = parser.feed_all(["id: 1", "data: a", "", "data: b", "", "id: bad\0id", "data: c", ""])
    assert [e.id for e in events] == ["1", "1", "1"]
    assert parser.last_event_id == "1"


def test_sse_parser_retry_accepts_only_digits() -> None:
    parser = SSEParser()
    parser.feed_all(["retry: 2000", "retry: soon", "retry: -5"])
    assert parser.retry_ms == 2000
    assert parser.retry_seconds == 2.0


def test_sse_parser_field_without_colon_and_unknown_fields() -> None:
    events = SSEParser().feed_all(["data", "bogus: 1", "data", ""])
    assert events == [SSEEvent("message", "\n", "")]


def test_sse_parser_strips_a_leading_byte_order_mark_once() -> None:
    assert SSEParser().feed_all(["\ufeffdata: x", ""]) == [SSEEvent("message", "x", "")]


def test_sse_parser_reset_drops_a_half_received_event_but_keeps_the_id() -> None:
    parser = SSEParser()
    parser.feed_all(["id: 5", "data: a", "", "event: job", "data: cut off"])
    parser.reset()
    assert parser.feed_all(["data: b", ""]) == [SSEEvent("message", "b", "5")]
