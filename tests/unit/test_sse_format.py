"""SSE encoding (proxy side) against the EventSource parsing rules (client side)."""

from __future__ import annotations

import base64
import json

import pytest

from smoke_tests.sse_client import Parser
from sse_proxy import sse


def test_an_entry_becomes_one_event_with_id_action_and_json_fields() -> None:
    data = sse.entry_event("1700000000000-2", {"sender": "a", "action": "lock", "payload": "{}"})
    [event] = Parser().feed(data)
    assert event.id == "1700000000000-2"
    assert event.event == "lock"
    assert event.json() == {"sender": "a", "action": "lock", "payload": "{}"}


@pytest.mark.parametrize("action", ["", "two words", "line\nbreak", "x" * 65, "évènement"])
def test_unsafe_or_missing_actions_become_message_events(action: str) -> None:
    fields = {"action": action, "text": "line one\nline two\r\nthree"}
    [event] = Parser().feed(sse.entry_event("1-1", fields))
    assert event.event == "message"
    assert event.json() == fields  # line breaks survive inside the JSON string


def test_control_events_do_not_move_the_last_event_id() -> None:
    parser = Parser()
    parser.feed(sse.entry_event("5-0", {"a": "b"}))
    [gap] = parser.feed(sse.control_event("gap", {"requested": "1-0", "oldest": "3-0"}))
    assert gap.event == "gap" and gap.id is None
    assert parser.last_id == "5-0"


def test_retry_and_comments_are_not_events() -> None:
    parser = Parser()
    assert parser.feed(sse.retry(2500) + sse.comment("hello") + sse.HEARTBEAT) == []
    assert parser.retry_ms == 2500
    assert parser.comments == 2


def test_parser_handles_events_split_across_chunks_and_crlf() -> None:
    data = b'id: 9-9\r\nevent: x\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
    parser = Parser()
    events = [e for i in range(len(data)) for e in parser.feed(data[i : i + 1])]
    assert len(events) == 1
    assert events[0].data == '{"a":\n1}'


@pytest.mark.parametrize("text", ["1-1", "0-0", "18446744073709551615-18446744073709551615"])
def test_entry_ids_parse(text: str) -> None:
    assert sse.format_entry_id(sse.parse_entry_id(text)) == text


@pytest.mark.parametrize(
    "text", ["", "1", "1-", "-1", "a-b", "1-1-1", " 1-1", "18446744073709551616-0", "1" * 30 + "-0"]
)
def test_malformed_entry_ids_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="stream entry id"):
        sse.parse_entry_id(text)


def test_fields_that_are_not_utf8_are_sent_as_base64_and_the_rest_unchanged() -> None:
    # The Redis clients decode with surrogateescape: bytes that are not UTF-8 arrive as
    # lone surrogates, exactly recoverable.
    raw_value = b"\xff\xfeok".decode("utf-8", "surrogateescape")
    raw_name = b"\xc3".decode("utf-8", "surrogateescape")
    fields = {"action": "note", "payload": raw_value, raw_name: "v", "text": "héllo"}
    [event] = Parser().feed(sse.entry_event("1-1", fields))
    assert json.loads(event.data) == {
        "action": "note",
        "payload": {"base64": base64.b64encode(b"\xff\xfeok").decode()},
        "base64:" + base64.b64encode(b"\xc3").decode(): "v",
        "text": "héllo",
    }
    assert event.event == "note"
    binary_action = {"action": raw_value}
    [named] = Parser().feed(sse.entry_event("1-2", binary_action))
    assert named.event == "message"  # a binary action is no event name


@pytest.mark.parametrize("action", ["error", "open", "position", "gap", "overflow"])
def test_actions_that_are_reserved_event_names_are_mapped(action: str) -> None:
    # `error` would fire a browser's onerror, `open` its onopen; position/gap/overflow are
    # the proxy's own events.
    [event] = Parser().feed(sse.entry_event("1-1", {"action": action}))
    assert event.event == f"action-{action}"
    assert json.loads(event.data) == {"action": action}  # the field itself is untouched


def test_ordinary_actions_stay_event_names() -> None:
    [event] = Parser().feed(sse.entry_event("1-1", {"action": "task_claimed"}))
    assert event.event == "task_claimed"
