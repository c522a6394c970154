"""Hostile frames from the server to the client: whatever a server (or a
man in the middle of plain ws://) sends, ``client.events()`` keeps going and
still yields the real chats, exactly once and in order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamcheck import Collector, Sender, assert_exactly_once_in_order

from concordctl import Client, UnknownEvent
from concordctl.server import EmbeddedServer, ServerConfig

CHAT = {
    "id": 1,
    "createdAt": 1,
    "authorId": 1,
    "channelId": 1,
    "threadId": None,
    "content": "forged",
    "edited": False,
    "reactions": {},
}
HOSTILE: list[str | bytes] = [
    "",
    "not json",
    "[" * 60_000,
    '{"type": "chat_sent"}',
    '{"type": "chat_sent", "chat": {"id": "1"}}',
    json.dumps({"type": "chat_sent", "chat": CHAT | {"id": 2**70}}),
    '{"type": "chat_sent", "chat": {"id": NaN}}',
    '{"type": "chat_typing", "userId": 1e999, "channelId": 1, "threadId": null, "sentAt": 1}',
    '{"type": "user_status_updated", "userId": 1, "status": "AWAY"}',
    '{"type": "voice_joined", "userId": 1}',
    '{"type": 5}',
    '{"type": "chat_edited", "chatId": 1, "channelId": 1, "threadId": null, "content": "\\ud800"}',
    b"\x00\x01\x02binary",
    b'{"type": "chat_sent", "chat": {"content": "\xff"}}',
    "x" * (9 * 2**20),  # above the client's 8 MiB frame limit: the socket is closed
]


@pytest.fixture
async def collector(server: EmbeddedServer, admin_password: str) -> AsyncIterator[Collector]:
    async with Client(
        server.url, username="admin", password=admin_password, config_path="/nonexistent"
    ) as client:
        c = Collector()
        c.start(
            client.events(
                on_state=c.on_state,
                backoff={"base": 0.05, "cap": 0.5},
                ping_interval=1.0,
                bad_frame_interval=0.05,  # malformed frames are the point here
            )
        )
        await c.wait_for(lambda: "connected" in c.state_names(), 10, "connect")
        yield c
        await c.stop()


async def test_named_hostile_frames(
    server: EmbeddedServer, sender: Sender, collector: Collector
) -> None:
    # A marker of an unknown type after each group proves every frame before
    # it was handled (a malformed frame makes the stream recover in place,
    # throttled by bad_frame_interval, so a chat sent after may come first).
    groups = (HOSTILE[:-1], HOSTILE[-1:], HOSTILE[:3])
    for i, group in enumerate(groups):
        for frame in group:
            await server.broadcast_raw(frame, binary=isinstance(frame, bytes))
        chat = await sender.send(f"after-{i}")
        await collector.wait_for(collector.has_chats([chat]), 15, f"the chat after group {i}")
        if i == 1:
            continue  # the oversized frame closed the socket: a reconnect recovered the chat
        await server.broadcast_raw(json.dumps({"type": "marker", "n": i}))

        def marked(n: int = i) -> bool:
            return any(
                isinstance(e, UnknownEvent) and e.data.get("n") == n for e in collector.events
            )

        await collector.wait_for(marked, 15, f"the marker after group {i}")
    assert collector.error is None
    assert_exactly_once_in_order(collector, sender.sent)
    unknown = [e.type for e in collector.events if isinstance(e, UnknownEvent)]
    assert unknown == ["voice_joined", "marker", "marker"]
    forged = [e for e in collector.chats() if e.chat.content == "forged"]
    # Issue 12 item 14: an id claiming a time far in the future (2^70) is
    # refused before the de-duplication window, so it cannot make every later
    # chat look already seen (the chats after it above all arrived).
    assert forged == [], "an id from the far future is refused"


frames = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
).map(lambda v: json.dumps(v, allow_nan=True)) | st.builds(
    lambda kind, body: json.dumps(body | {"type": kind}, allow_nan=True),
    st.sampled_from(["chat_sent", "chat_edited", "chat_typing", "channel_created", "x"]),
    st.dictionaries(
        st.sampled_from(["chat", "chatId", "channelId", "threadId", "userId", "content"]),
        st.integers() | st.text(max_size=5) | st.none() | st.just(CHAT),
        max_size=4,
    ),
)


async def _survive(frames: list[str]) -> None:
    config = ServerConfig(admin_password="fuzz-stream-pw-1", online_delay=0.1)
    async with EmbeddedServer(config) as server:
        sender = await Sender.login(server.url, "admin", "fuzz-stream-pw-1", "general")
        async with Client(
            server.url, username="admin", password="fuzz-stream-pw-1", config_path="/nonexistent"
        ) as client:
            c = Collector()
            c.start(
                client.events(
                    on_state=c.on_state,
                    backoff={"base": 0.05, "cap": 0.5},
                    bad_frame_interval=0.05,
                )
            )
            try:
                await c.wait_for(lambda: "connected" in c.state_names(), 10, "connect")
                for frame in frames:
                    await server.broadcast_raw(frame)
                chat = await sender.send("after the fuzz")
                await c.wait_for(c.has_chats([chat]), 15, "the chat after the frames")
                assert c.error is None
            finally:
                await c.stop()
                await sender.aclose()


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, min_size=1, max_size=15))
def test_fuzzed_frames_from_the_server(batch: list[str]) -> None:
    asyncio.run(_survive(batch))
