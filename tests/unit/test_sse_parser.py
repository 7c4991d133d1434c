"""The smoke suite's SSE parser against the HTML Living Standard, § 9.2.5-9.2.6
("Parsing an event stream", "Interpreting an event stream").

The spec's own examples (§ 9.2.1 and § 9.2.6) come first, verbatim, then the rules each
edge case exercises. Every stream is fed as bytes, whole, split at every offset, and one
byte at a time, with LF, CRLF and CR line endings: the result must not depend on how the
network cut the stream.
"""

from __future__ import annotations

import pytest

from smoke_tests.sse_client import Event, Parser

# (type, data, lastEventId) of each dispatched event, as a browser's MessageEvent has them.
Seen = tuple[str, str, str]

# § 9.2.1 Introduction
INTRO_MESSAGES = (
    "data: This is the first message.\n"
    "\n"
    "data: This is the second message, it\n"
    "data: has two lines.\n"
    "\n"
    "data: This is the third message.\n"
    "\n"
)
INTRO_TYPES = (
    "event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n"
)
# § 9.2.6 Interpreting an event stream
STOCK = "data: YHOO\ndata: +2\ndata: 10\n\n"
COMMENT_AND_IDS = (
    ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"
)
BARE_DATA = "data\n\ndata\ndata\n\ndata:"
SPACE_AFTER_COLON = "data:test\n\ndata: test\n\n"

SPEC_EXAMPLES: dict[str, tuple[str, list[Seen]]] = {
    "intro-messages": (
        INTRO_MESSAGES,
        [
            ("message", "This is the first message.", ""),
            ("message", "This is the second message, it\nhas two lines.", ""),
            ("message", "This is the third message.", ""),
        ],
    ),
    "intro-event-types": (
        INTRO_TYPES,
        [("add", "73857293", ""), ("remove", "2153", ""), ("add", "113411", "")],
    ),
    "stock": (STOCK, [("message", "YHOO\n+2\n10", "")]),
    "comment-and-ids": (
        COMMENT_AND_IDS,
        [
            ("message", "first event", "1"),
            ("message", "second event", ""),
            ("message", " third event", ""),
        ],
    ),
    "bare-data": (BARE_DATA, [("message", "", ""), ("message", "\n", "")]),
    "space-after-colon": (SPACE_AFTER_COLON, [("message", "test", ""), ("message", "test", "")]),
}

LINE_ENDINGS = {"lf": "\n", "crlf": "\r\n", "cr": "\r"}


def seen(events: list[Event]) -> list[Seen]:
    return [(e.event, e.data, e.last_event_id) for e in events]


def parse(data: bytes, parser: Parser | None = None) -> list[Seen]:
    return seen((parser or Parser()).feed(data))


def with_endings(text: str, ending: str) -> bytes:
    return text.replace("\n", ending).encode()


def splits(data: bytes) -> list[list[bytes]]:
    """The stream whole, cut in two at every offset, and one byte at a time."""
    cuts = [[data[:i], data[i:]] for i in range(len(data) + 1)]
    return [[data], *cuts, [data[i : i + 1] for i in range(len(data))]]


def fed(chunks: list[bytes], parser: Parser | None = None) -> list[Seen]:
    parser = parser or Parser()
    return [s for chunk in chunks for s in seen(parser.feed(chunk))]


# ---- the spec's examples ---------------------------------------------------------


@pytest.mark.parametrize("ending", LINE_ENDINGS.values(), ids=LINE_ENDINGS.keys())
@pytest.mark.parametrize("name", SPEC_EXAMPLES)
def test_spec_examples_give_the_spec_events_however_the_stream_is_cut(
    name: str, ending: str
) -> None:
    text, expected = SPEC_EXAMPLES[name]
    for chunks in splits(with_endings(text, ending)):
        assert fed(chunks) == expected, [len(c) for c in chunks]


def test_stock_example_joins_the_data_lines_with_newlines() -> None:
    assert parse(STOCK.encode()) == [("message", "YHOO\n+2\n10", "")]


def test_comment_and_id_example_sets_then_resets_the_last_event_id() -> None:
    parser = Parser()
    first, second, third = COMMENT_AND_IDS.split("\n\n")[1:4]
    assert parser.feed(b": test stream\n\n") == []
    parser.feed(f"{first}\n\n".encode())
    assert parser.last_id == "1"  # a reconnection now would send Last-Event-ID: 1
    parser.feed(f"{second}\n\n".encode())
    assert parser.last_id == ""  # `id` with no value: no Last-Event-ID any more
    [event] = parser.feed(f"{third}\n\n".encode())
    assert (event.data, event.last_event_id) == (" third event", "")


def test_comment_and_id_example_needs_its_final_blank_line() -> None:
    parser = Parser()
    events = parser.feed(COMMENT_AND_IDS.removesuffix("\n").encode())
    assert [e.data for e in events] == ["first event", "second event"]
    parser.new_stream()  # the end of the stream is not enough to dispatch
    assert parser.feed(b"\n") == []


def test_bare_data_example_fires_an_empty_and_a_newline_event_and_drops_the_last_block() -> None:
    parser = Parser()
    assert [e.data for e in parser.feed(BARE_DATA.encode())] == ["", "\n"]
    parser.new_stream()
    assert parser.feed(b"\n") == []


def test_one_space_after_the_colon_is_removed_and_only_one() -> None:
    assert parse(SPACE_AFTER_COLON.encode()) == [("message", "test", "")] * 2
    assert parse(b"data:  two\n\n") == [("message", " two", "")]


# ---- dispatch ----------------------------------------------------------------------


def test_a_block_with_an_event_type_but_no_data_fires_nothing_and_resets_the_type() -> None:
    assert parse(b"event: add\n\ndata: x\n\n") == [("message", "x", "")]


def test_a_block_with_only_an_id_moves_the_last_event_id_without_firing() -> None:
    parser = Parser()
    assert parser.feed(b"id: 7\n\n") == []
    assert parser.last_id == "7"
    assert parse(b"data: x\n\n", parser) == [("message", "x", "7")]


def test_retry_and_comment_blocks_fire_nothing() -> None:
    parser = Parser()
    assert parser.feed(b"id: 1\ndata: a\n\nretry: 200\n\n: stream x\n\n: heartbeat\n\n\n") != []
    assert parser.retry_ms == 200
    assert parser.comments == 2
    assert parser.feed(b": heartbeat\n\n\n\n") == []


def test_the_last_event_id_persists_across_events_without_an_id() -> None:
    events = Parser().feed(b"id: 7\ndata: a\n\ndata: b\n\n")
    assert seen(events) == [("message", "a", "7"), ("message", "b", "7")]
    # `id` is the block's own field: the proxy's control events carry none.
    assert [e.id for e in events] == ["7", None]


def test_an_id_containing_null_is_ignored() -> None:
    parser = Parser()
    assert parse(b"id: 5\ndata: a\n\nid: 6\x00\ndata: b\n\n", parser)[1] == ("message", "b", "5")
    assert parser.last_id == "5"


def test_a_seeded_last_event_id_is_the_events_until_the_server_sets_one() -> None:
    assert parse(b"data: a\n\n", Parser(last_id="41")) == [("message", "a", "41")]


# ---- fields ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["+5", " 5", "5 ", "-1", "1a", "", "5.0", "1_000", "٣", "²"])
def test_retry_is_ignored_unless_it_is_only_ascii_digits(value: str) -> None:
    parser = Parser()
    assert parser.feed(f"retry: 900\n\nretry: {value}\ndata: x\n\n".encode()) != []
    assert parser.retry_ms == 900


@pytest.mark.parametrize(("value", "ms"), [("0", 0), ("5000", 5000), ("007", 7)])
def test_retry_of_ascii_digits_sets_the_reconnection_time(value: str, ms: int) -> None:
    parser = Parser()
    parser.feed(f"retry: {value}\n".encode())
    assert parser.retry_ms == ms


def test_a_field_without_colon_uses_the_whole_line_as_its_name() -> None:
    parser = Parser()
    assert parse(b"data\n\nevent\ndata: x\n\nid: 5\n\nid\n\n", parser) == [
        ("message", "", ""),
        ("message", "x", ""),
    ]
    assert parser.last_id == ""


def test_field_names_are_case_sensitive_and_unknown_fields_are_ignored() -> None:
    assert parse(b"Data: x\nDATA: y\nfoo: bar\nEvent: e\n\n") == []


def test_only_the_first_colon_separates_name_and_value() -> None:
    assert parse(b"data: a: b\ndata::c\n\n") == [("message", "a: b\n:c", "")]


# ---- lines and bytes ---------------------------------------------------------------


def test_lines_end_in_crlf_cr_or_lf_in_any_mix() -> None:
    stream = b"event: e\r\nid: 1\rdata: one\ndata: two\r\n\r\n: c\rdata: three\n\r"
    for chunks in splits(stream):
        assert fed(chunks) == [("e", "one\ntwo", "1"), ("message", "three", "1")]


def test_a_cr_ends_its_line_at_once() -> None:
    # A server that ends lines with CR only gets its event without waiting for more bytes.
    assert parse(b"data: a\r\r") == [("message", "a", "")]
    parser = Parser()
    assert parser.feed(b"data: a\r") == []
    assert parse(b"\n", parser) == []  # the LF completes CRLF: no blank line yet
    assert parse(b"\n", parser) == [("message", "a", "")]


def test_one_leading_bom_is_stripped() -> None:
    bom = "\ufeff".encode()
    for chunks in splits(bom + b"data: a\n\n"):
        assert fed(chunks) == [("message", "a", "")]
    assert parse(bom + bom + b"data: a\n\n") == []  # the second is part of the field name
    assert parse(b"data: a\n\n" + bom + b"data: b\n\n") == [("message", "a", "")]


def test_invalid_utf8_becomes_replacement_characters() -> None:
    assert parse(b"data: \xff\xe2\x82\n\n") == [("message", "\ufffd\ufffd", "")]


def test_multibyte_characters_survive_any_cut() -> None:
    for chunks in splits("data: é✓𝄞\n\n".encode()):
        assert fed(chunks) == [("message", "é✓𝄞", "")]


# ---- one parser across reconnections -----------------------------------------------


def test_a_new_stream_discards_the_pending_block_and_keeps_the_last_event_id() -> None:
    parser = Parser()
    parser.feed(b"retry: 300\nid: 5\ndata: a\n\nid: 6\ndata: partial\ndata: cut mid-li")
    parser.new_stream()
    assert parser.last_id == "5"  # id 6 belonged to a block that never completed
    assert parse("\ufeffne\n\ndata: b\n\n".encode(), parser) == [("message", "b", "5")]
    assert parser.retry_ms == 300  # the reconnection time belongs to the event source
