"""Hostile input to the frame decoders: only FrameError may come out.

tests/test_protocol.py covers round trips, arbitrary bytes into decode_event
and arbitrary objects carrying a known event type. This adds what a hostile
peer sends: the client-frame decoder (what the server runs on every frame a
client writes), any JSON value at the top, non-standard literals (NaN,
Infinity), numbers far beyond 64 bits, lone surrogates, deep nesting, and
10 MB frames. A frame that does decode must encode again (a ``tail --json``
prints every event it decodes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concordctl import protocol as p

Decoder = Callable[[Any], Any]
DECODERS: list[Decoder] = [p.decode_event, p.decode_client_frame]
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CLIENT_TYPES = ["chat_typing", "chat_written", "chat_reaction"]
ALL_TYPES = sorted(p.EVENT_TYPES) + CLIENT_TYPES


def _reencode(decoder: Decoder, value: Any) -> None:
    """A decoded frame encodes again, and decodes to an equal value."""
    if value is None:
        return
    if decoder is p.decode_event:
        assert p.decode_event(p.encode_event(value)) == value
    else:
        assert p.decode_client_frame(p.encode_client_frame(value)) == value


def _only_frame_error(decoder: Decoder, frame: Any) -> None:
    try:
        value = decoder(frame)
    except p.FrameError:
        return
    _reencode(decoder, value)


# Any JSON, numbers of any size, floats including the ones JSON has no
# literal for (json.dumps writes NaN / Infinity, as a sloppy peer would).
any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
numbers = (
    st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=25,
)
field_names = (
    st.sampled_from(
        [
            "chat",
            "chatId",
            "channelId",
            "threadId",
            "userId",
            "content",
            "sentAt",
            "reaction",
            "adding",
            "reactions",
            "status",
            "channel",
            "since",
            "until",
            "id",
        ]
    )
    | any_text
)


@st.composite
def typed_objects(draw: st.DrawFn) -> dict[str, Any]:
    obj = draw(st.dictionaries(field_names, json_values, max_size=6))
    obj["type"] = draw(st.sampled_from(ALL_TYPES) | any_text | json_values)
    return obj


@FUZZ
@given(st.binary(max_size=300))
def test_client_frame_decoder_takes_arbitrary_bytes(raw: bytes) -> None:
    _only_frame_error(p.decode_client_frame, raw)


@FUZZ
@given(json_values | typed_objects(), st.sampled_from(DECODERS), st.booleans())
def test_any_json_value_only_raises_frame_error(value: Any, decoder: Decoder, as_str: bool) -> None:
    frame = json.dumps(value, allow_nan=True)
    _only_frame_error(decoder, frame if as_str else frame.encode())


@FUZZ
@given(st.text(max_size=40), st.sampled_from(DECODERS))
def test_lone_surrogates_as_bytes_only_raise_frame_error(content: str, decoder: Decoder) -> None:
    # Broken UTF-8 from the wire: surrogate code points encoded as if valid,
    # and JSON escapes of lone surrogates.
    raw = json.dumps({"type": "chat_written", "channelId": 1, "content": content})
    _only_frame_error(decoder, raw.encode("utf-8", "surrogatepass"))
    escaped = json.dumps({"type": "chat_written", "channelId": 1, "content": content + "\ud800"})
    _only_frame_error(decoder, escaped.encode())  # ensure_ascii: "\ud800" escape


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
def test_str_frame_with_a_lone_surrogate_raises_frame_error(decoder: Decoder) -> None:
    with pytest.raises(p.FrameError):
        decoder('{"type": "chat_written", "channelId": 1, "content": "\ud800"}')


INVALID_UTF8 = [b"\xff", b"\xed\xa0\x80", b"\xc0\xae", b"\xe2\x82", b"a\x80b"]
UTF8_TEMPLATES = [
    b'{"type": "chat_written", "channelId": 1, "content": "%s"}',
    b'{"type": "chat_sent", "chat": {"id": 1, "createdAt": 1, "authorId": 1, "channelId": 1, '
    b'"threadId": null, "content": "%s", "edited": false, "reactions": {}}}',
    b'{"type": "some_new_type", "text": "%s"}',
    b'{"type": "chat_reaction", "chatId": 1, "reaction": "%s"}',
]


@pytest.mark.parametrize(
    "decoder",
    [*DECODERS, lambda raw: p.decode(raw, p.NewChat)],
    ids=["decode_event", "decode_client_frame", "decode"],
)
def test_invalid_utf8_inside_a_string_raises_frame_error(decoder: Decoder) -> None:
    for template in UTF8_TEMPLATES:
        for bad in INVALID_UTF8:
            with pytest.raises(p.FrameError):
                decoder(template % bad)


CHAT = {
    "id": 1,
    "createdAt": 1,
    "authorId": 1,
    "channelId": 1,
    "threadId": None,
    "content": "x",
    "edited": False,
    "reactions": {},
}


def _chat_frame(**chat: Any) -> bytes:
    return json.dumps({"type": "chat_sent", "chat": CHAT | chat}, allow_nan=True).encode()


HOSTILE_NUMBERS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"-1e999",
    b"1.5",
    b"1e2",
    b"9" * 5000,
    b"-" + b"9" * 5000,
    b"0x10",
    b"01",
    b"+1",
    b"-0",
]


@pytest.mark.parametrize("literal", HOSTILE_NUMBERS, ids=lambda b: b[:12].decode())
@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
def test_hostile_number_literals_in_id_fields(decoder: Decoder, literal: bytes) -> None:
    for template in (
        b'{"type": "chat_sent", "chat": {"id": %s, "createdAt": 1, "authorId": 1, '
        b'"channelId": 1, "threadId": null, "content": "x", "edited": false, "reactions": {}}}',
        b'{"type": "chat_written", "channelId": %s, "content": "x"}',
        b'{"type": "chat_reaction", "chatId": %s, "reaction": "x"}',
        b'{"type": "some_new_type", "n": %s}',
    ):
        _only_frame_error(decoder, template % literal)


def test_ids_beyond_64_bits_stay_whole() -> None:
    # The contract promises ids as plain int at any size: never a float.
    big = 2**64 + 1
    event = p.decode_event(_chat_frame(id=big, channelId=2**100))
    assert isinstance(event, p.ChatSent)
    assert event.chat.id == big and event.chat.channel_id == 2**100
    assert str(big) in p.encode_event(event).decode()
    frame = p.decode_client_frame(b'{"type":"chat_written","channelId":%d,"content":"x"}' % big)
    assert isinstance(frame, p.ChatWritten) and frame.channel_id == big


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 200_000,
        b"{" * 200_000,
        b'{"a":' * 200_000,
        b'{"type": "chat_written", "channelId": 1, "content": ' + b"[" * 200_000,
        b'{"type": "new_type", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"type": "chat_sent", "chat": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001,
    ],
    ids=["arrays", "objects", "keys", "in-known-frame", "balanced-unknown", "balanced-chat"],
)
def test_deep_nesting(decoder: Decoder, raw: bytes) -> None:
    _only_frame_error(decoder, raw)


TEN_MB = 10 * 1024 * 1024


def test_ten_megabyte_frames() -> None:
    # Valid and huge: decodes whole (the size cap is the transport's job).
    event = p.decode_event(_chat_frame(content="x" * TEN_MB))
    assert isinstance(event, p.ChatSent) and len(event.chat.content) == TEN_MB
    written = p.decode_client_frame(
        json.dumps({"type": "chat_written", "channelId": 1, "content": "é" * (TEN_MB // 2)})
    )
    assert isinstance(written, p.ChatWritten) and len(written.content) == TEN_MB // 2
    for decoder in DECODERS:
        for junk in (
            b"\xff" * TEN_MB,
            b'{"type": "chat_sent", "chat": "' + b"a" * TEN_MB,
            b"[" * TEN_MB,
            b"1" * TEN_MB,
        ):
            with pytest.raises(p.FrameError):
                decoder(junk)
        _only_frame_error(decoder, b'{"type": "x", "k": "' + b"\\u0000" * (TEN_MB // 6) + b'"}')


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
def test_buffer_types_and_duplicate_keys(decoder: Decoder) -> None:
    raw = b'{"type": "chat_written", "channelId": 1, "content": "x"}'
    for frame in (bytearray(raw), memoryview(raw), memoryview(b"xx" + raw)[2:]):
        _only_frame_error(decoder, frame)
    _only_frame_error(decoder, b'{"type": "chat_typing", "type": "chat_written", "channelId": 1}')
    _only_frame_error(decoder, b'{"type": "chat_sent", "type": 5}')
