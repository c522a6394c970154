"""protocol.py: decode/encode every frame of the contract, without sockets."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concordctl import protocol as p

BIG_ID = 8501928463962112 << 6  # around 2**59, beyond float64's exact range

CHAT = {
    "id": BIG_ID,
    "createdAt": 1_700_000_000_000,
    "authorId": BIG_ID + 1,
    "channelId": BIG_ID + 2,
    "threadId": None,
    "content": "Hello, this is my message!",
    "edited": False,
    "reactions": {"😂": 5, "✔️": 2, "👩‍👩‍👧": 1},
}
CHANNEL = {
    "id": 7,
    "parentChannelId": None,
    "ordinality": 0,
    "name": "general",
    "description": None,
    "capabilities": ["text"],
    "createdAt": 1,
    "createdByUserId": 2,
}

SERVER_FRAMES: list[dict[str, Any]] = [
    {"type": "chat_sent", "chat": CHAT},
    {"type": "chat_edited", "chatId": 1, "channelId": 2, "threadId": 3, "content": "x"},
    {"type": "chat_deleted", "chatId": 1, "channelId": 2, "threadId": None},
    {
        "type": "chat_reactions_updated",
        "chatId": 1,
        "channelId": 2,
        "threadId": None,
        "reactions": {"😂": 5},
    },
    {"type": "chat_typing", "userId": 123, "channelId": 456, "threadId": None, "sentAt": 1234567},
    {"type": "channel_created", "channel": CHANNEL},
    {"type": "channel_deleted", "channelId": 7},
    {"type": "channels_updated", "channel": CHANNEL},
    {"type": "user_joined", "userId": 9},
    {"type": "user_left", "userId": 9},
    {"type": "user_status_updated", "userId": 9, "status": "ONLINE"},
    {"type": "concordctl.gap", "since": 1, "until": 2},
]


@pytest.mark.parametrize("frame", SERVER_FRAMES, ids=lambda f: f["type"])
def test_every_server_frame_round_trips(frame: dict[str, Any]) -> None:
    raw = json.dumps(frame, ensure_ascii=False).encode()
    event = p.decode_event(raw)
    assert not isinstance(event, p.UnknownEvent)
    assert event.type == frame["type"]
    assert json.loads(p.encode_event(event)) == frame
    assert p.decode_event(raw.decode()) == event  # str frames too


def test_every_known_type_has_a_frame_here() -> None:
    assert {f["type"] for f in SERVER_FRAMES} == p.EVENT_TYPES


def test_snake_case_attributes_and_whole_ids() -> None:
    event = p.decode_event(json.dumps({"type": "chat_sent", "chat": CHAT}))
    assert isinstance(event, p.ChatSent)
    assert event.chat.channel_id == BIG_ID + 2
    assert event.chat.reactions["👩‍👩‍👧"] == 1
    assert event.recovered is False
    assert str(BIG_ID) in p.encode_event(event).decode()


def test_recovered_flag_is_only_written_when_true() -> None:
    event = p.ChatSent(chat=msgspec.convert(CHAT, p.Chat, from_attributes=False))
    assert "recovered" not in json.loads(p.encode_event(event))
    event.recovered = True
    assert json.loads(p.encode_event(event))["recovered"] is True
    again = p.decode_event(p.encode_event(event))
    assert isinstance(again, p.ChatSent) and again.recovered


def test_unknown_type_keeps_the_whole_object() -> None:
    frame = {"type": "voice_joined", "userId": 1, "nested": {"a": [1, 2]}}
    event = p.decode_event(json.dumps(frame))
    assert isinstance(event, p.UnknownEvent)
    assert event.type == "voice_joined" and event.data == frame
    assert json.loads(p.encode_event(event)) == frame


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"not json",
        b"[]",
        b"42",
        b'"chat_sent"',
        b'{"x": 1}',
        b'{"type": 5}',
        b'{"type": null}',
        b'{"type": "chat_sent"}',
        b'{"type": "chat_sent", "chat": {"id": "1"}}',
        b'{"type": "chat_deleted", "chatId": 1.5, "channelId": 2, "threadId": null}',
        b'{"type": "user_status_updated", "userId": 1, "status": "AWAY"}',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
)
def test_malformed_frames_raise_frame_error(raw: bytes) -> None:
    with pytest.raises(p.FrameError):
        p.decode_event(raw)


CLIENT_FRAMES: list[dict[str, Any]] = [
    {"type": "chat_typing", "channelId": 123, "threadId": None, "sentAt": 123456789},
    {"type": "chat_typing", "channelId": 123, "threadId": None},
    {"type": "chat_written", "channelId": 123, "threadId": None, "sentAt": 1, "content": "hi"},
    {"type": "chat_reaction", "chatId": 1234, "reaction": "😂", "adding": True},
]


@pytest.mark.parametrize("frame", CLIENT_FRAMES, ids=lambda f: f["type"])
def test_client_frames_round_trip(frame: dict[str, Any]) -> None:
    decoded = p.decode_client_frame(json.dumps(frame))
    assert decoded is not None and decoded.type == frame["type"]
    assert json.loads(p.encode_client_frame(decoded)) == frame


def test_client_frame_of_unknown_type_is_ignored_and_bad_one_raises() -> None:
    assert p.decode_client_frame(b'{"type": "heartbeat"}') is None
    with pytest.raises(p.FrameError):
        p.decode_client_frame(b'{"type": "chat_written", "channelId": "x"}')
    with pytest.raises(p.FrameError):
        p.decode_client_frame(b"nope")


def test_rest_bodies_decode_and_secrets_stay_out_of_reprs() -> None:
    token = p.decode(b'{"token": "eyJhbGciOi.secret.sig"}', p.Token)
    assert token.token.endswith("sig") and "secret" not in repr(token)
    creds = p.Credentials(username="bot", password="hunter2")
    assert "hunter2" not in repr(creds)
    assert json.loads(p.encode(creds)) == {"username": "bot", "password": "hunter2"}
    assert json.loads(p.encode(p.NewChat(content="x"))) == {"content": "x"}
    assert json.loads(p.encode(p.NewChat(content="x", thread_id=None, sent_at=5))) == {
        "content": "x",
        "sentAt": 5,
        "threadId": None,
    }
    with pytest.raises(p.FrameError):
        p.decode(b'{"tok": 1}', p.Token)


def test_full_channel_tree_and_user() -> None:
    leaf = {k: v for k, v in CHANNEL.items() if k != "parentChannelId"} | {"children": []}
    tree = [dict(leaf, id=1, children=[dict(leaf, id=2)])]
    channels = p.decode(json.dumps(tree), list[p.FullChannel])
    assert channels[0].children[0].id == 2
    user = {
        "id": 1,
        "username": "admin",
        "profile": {"createdAt": 1, "nickname": "admin", "bio": None, "avatarId": None},
        "status": {"onlineStatus": "OFFLINE"},
    }
    assert p.decode(json.dumps(user), p.FullUser).status.online_status == "OFFLINE"
    assert json.loads(p.encode(p.decode(json.dumps(user), p.FullUser))) == user


# Property-based round trips over arbitrary ids, text and reaction maps.

ids = st.integers(min_value=0, max_value=2**64 - 1)
big_ids = st.integers(min_value=0, max_value=2**200)
text = st.text(st.characters(exclude_categories=("Cs",)))
reactions = st.dictionaries(text, st.integers(min_value=0, max_value=2**31), max_size=8)
thread = st.none() | ids


@st.composite
def chat_frames(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "chat_sent",
        "chat": {
            "id": draw(big_ids),
            "createdAt": draw(st.integers(min_value=0, max_value=2**63)),
            "authorId": draw(ids),
            "channelId": draw(ids),
            "threadId": draw(thread),
            "content": draw(text),
            "edited": draw(st.booleans()),
            "reactions": draw(reactions),
        },
    }


@st.composite
def reaction_frames(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "chat_reactions_updated",
        "chatId": draw(ids),
        "channelId": draw(ids),
        "threadId": draw(thread),
        "reactions": draw(reactions),
    }


@settings(max_examples=300, deadline=None)
@given(chat_frames() | reaction_frames())
def test_round_trip_property(frame: dict[str, Any]) -> None:
    raw = json.dumps(frame, ensure_ascii=False).encode()
    assert json.loads(p.encode_event(p.decode_event(raw))) == frame


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_frame_error(raw: bytes) -> None:
    with contextlib.suppress(p.FrameError):
        p.decode_event(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(text, json_values, max_size=5), st.sampled_from(sorted(p.EVENT_TYPES)))
def test_arbitrary_json_objects_only_raise_frame_error(obj: dict[str, Any], kind: str) -> None:
    obj["type"] = kind
    try:
        event = p.decode_event(json.dumps(obj))
    except p.FrameError:
        return
    assert event.type == kind
