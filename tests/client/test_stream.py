"""Client.events() against the embedded server: restarts, outages, cursors, bad frames."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from concordctl import (
    ChatSent,
    ChatTyping,
    Client,
    Gap,
    NotAuthenticated,
    UnknownEvent,
)
from concordctl.errors import ConcordError
from concordctl.protocol import GAP_TYPE
from concordctl.server import EmbeddedServer, ServerConfig
from tests.helpers.accounts import forged_token
from tests.helpers.streams import Collector
from tests.helpers.timing import UNIT, async_wait_until

from .conftest import FAST_STREAM

Start = Callable[..., Awaitable[Collector]]


async def send_all(sender: Client, channel: str | int, contents: list[str]) -> None:
    """Send each chat exactly once, even across a server restart.

    A send that fails ambiguously is checked with a search before it is
    repeated: the test must not create the duplicates it looks for.
    """
    for text in contents:
        for _ in range(50):
            try:
                await sender.send_chat(channel, text)
                break
            except ConcordError:
                await asyncio.sleep(0.05)
                try:
                    if any(c.content == text for c in await sender.search_chats(query=text)):
                        break
                except ConcordError:
                    continue
        else:
            raise AssertionError(f"could not send {text!r}")


def recovered(collector: Collector) -> list[str]:
    return [ev.chat.content for ev in collector.events if isinstance(ev, ChatSent) and ev.recovered]


def gaps(collector: Collector) -> list[Gap]:
    return [ev for ev in collector.events if isinstance(ev, Gap)]


async def test_live_events_and_states(client: Client, sender: Client, collect: Start) -> None:
    await client.send_chat("general", "before the stream")  # must not be replayed
    c = await collect()
    await send_all(sender, "general", ["one", "two"])
    await c.wait_until(lambda: c.contents() == ["one", "two"])
    assert not gaps(c)
    assert [s.state for s in c.states] == ["connecting", "connected"]
    await c.stream.aclose()
    assert c.states[-1].state == "closed"


async def test_restart_in_the_middle_of_1000_chats(
    server: EmbeddedServer, client: Client, sender: Client, collect: Start
) -> None:
    await send_all(sender, "general", ["old-1", "old-2"])  # before the stream: never yielded
    c = await collect()
    expected = [f"chat-{i:04d}" for i in range(1000)]
    sending = asyncio.create_task(send_all(sender, "general", expected))
    await c.wait_until(lambda: len(c.contents()) >= 300, seconds=30)
    await server.restart()
    await sending
    await send_all(sender, "general", ["sentinel"])  # behind any duplicate still coming
    await c.wait_until(lambda: "sentinel" in c.contents(), seconds=30)
    assert c.contents() == [*expected, "sentinel"]  # each exactly once, in order
    assert len(gaps(c)) == 1
    gap = gaps(c)[0]
    assert gap.since <= gap.until
    states = [s.state for s in c.states]
    assert states.count("reconnecting") >= 1 and states[-1] == "connected"
    reconnecting = next(s for s in c.states if s.state == "reconnecting")
    assert reconnecting.attempt == 1 and reconnecting.delay is not None
    assert "1012" in (reconnecting.error or "")


async def test_resume_from_a_cursor_after_the_consumer_stopped(
    client: Client, sender: Client, collect: Start
) -> None:
    c = await collect()
    await send_all(sender, "general", ["a", "b", "c"])
    await c.wait_until(lambda: len(c.contents()) == 3)
    last = next(ev for ev in reversed(c.events) if isinstance(ev, ChatSent)).chat
    await c.stop()

    await send_all(sender, "general", ["d", "e", "f"])  # nobody listening
    resumed = await collect(since=last.id)
    await resumed.wait_until(lambda: len(resumed.contents()) == 3)
    assert resumed.contents() == ["d", "e", "f"] == recovered(resumed)
    assert len(gaps(resumed)) == 1 and gaps(resumed)[0].since <= last.created_at
    assert isinstance(resumed.events[0], Gap)  # the gap comes first, then the chats
    await send_all(sender, "general", ["g"])
    await resumed.wait_until(lambda: resumed.contents()[-1:] == ["g"])
    assert resumed.contents() == ["d", "e", "f", "g"]

    by_time = await collect(since_time=last.created_at)
    await by_time.wait_until(lambda: len(by_time.contents()) == 4)
    assert by_time.contents() == ["d", "e", "f", "g"]


async def test_server_down_for_a_while_and_back(
    tmp_path: Path, admin_password: str, make_user: object
) -> None:
    cfg = ServerConfig(db_path=tmp_path / "concord.db", admin_password=admin_password)
    async with (
        EmbeddedServer(cfg) as server,
        Client(
            server.url, username="admin", password=admin_password, stream_options=FAST_STREAM
        ) as client,
    ):
        c = Collector(client.events(on_state=lambda s: c.on_state(s))).start()
        await c.wait_connected()
        await send_all(client, "general", ["up-1"])
        await c.wait_until(lambda: c.contents() == ["up-1"])
        await server.stop()
        # Refused connections meanwhile: wait until it has retried with backoff.
        await c.wait_until(lambda: sum(s.state == "reconnecting" for s in c.states) >= 3)
        await server.start()
        await send_all(client, "general", ["back-1", "back-2", "sentinel"])
        await c.wait_until(lambda: "sentinel" in c.contents())
        assert c.contents() == ["up-1", "back-1", "back-2", "sentinel"]
        attempts = [s.attempt for s in c.states if s.state == "reconnecting"]
        assert max(attempts) >= 2, c.states  # it kept trying with backoff
        delays = [s.delay for s in c.states if s.state == "reconnecting"]
        assert all(d is not None and 0 < d <= 0.5 for d in delays)  # capped
        assert len(gaps(c)) == 1
        # Refused handshakes (HTTP 503) are retried the same way.
        server.refuse_connections(1.0)
        await server.drop_connections()
        await send_all(client, "general", ["during-refusal"])
        # Wait for the condition itself: the chat is already in the contents
        # count, so waiting on the count alone raced the refused handshake.
        await c.wait_until(lambda: any("503" in (s.error or "") for s in c.states))
        await c.wait_until(lambda: "during-refusal" in c.contents())
        await c.stop()


async def test_bad_frames_are_skipped_and_unknown_types_yielded(
    server: EmbeddedServer,
    client: Client,
    sender: Client,
    collect: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = await collect()
    general = await client.channel("general")
    chat = {
        "id": 1,
        "createdAt": 1,
        "authorId": 1,
        "channelId": general.id,
        "threadId": None,
        "content": "x" * 1_000_000,  # a huge but valid frame
        "edited": False,
        "reactions": {},
    }
    with caplog.at_level(logging.WARNING, logger="concordctl.stream"):
        await server.broadcast_raw('{"type": "chat_sent", "chat": {"id": 1, "crea')  # truncated
        await server.broadcast_raw("not json at all")
        await server.broadcast_raw('{"no": "type"}')
        await server.broadcast_raw('{"type": "chat_sent", "chat": "wrong shape"}')
        await server.broadcast_raw(b'{"type": "chat_sent", "x": "\xff"}', binary=True)
        await server.broadcast_raw('{"type": "server_news", "text": "hello"}')
        await server.broadcast_raw(json.dumps({"type": "chat_sent", "chat": chat}))
        await send_all(sender, "general", ["after the noise"])
        # The recoveries may bring "after the noise" before the frames ahead of it.
        await c.wait_until(
            lambda: (
                "after the noise" in c.contents()
                and any(isinstance(ev, UnknownEvent) for ev in c.events)
                and any(isinstance(ev, ChatSent) and ev.chat.id == 1 for ev in c.events)
            )
        )
        await send_all(sender, "general", ["sentinel"])  # behind any duplicate still coming
        await c.wait_until(lambda: "sentinel" in c.contents())
        assert c.contents().count("after the noise") == 1
    unknown = [ev for ev in c.events if isinstance(ev, UnknownEvent)]
    assert len(unknown) == 1 and unknown[0].type == "server_news"
    assert unknown[0].data == {"type": "server_news", "text": "hello"}
    huge = [ev for ev in c.events if isinstance(ev, ChatSent) and ev.chat.id == 1]
    assert len(huge) == 1 and len(huge[0].chat.content) == 1_000_000
    warnings = [r for r in caplog.records if "malformed frame" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited: one line for five bad frames
    # Each may have been a chat: a recovery in place, announced as a point gap.
    assert len(gaps(c)) == 5 and all(g.since == g.until for g in gaps(c))
    assert c.contents().count("after the noise") == 1
    assert c.stream.reconnects == 0  # the connection survived all of it
    assert c.stream.state.state == "connected"


async def test_a_frame_above_max_size_costs_a_reconnect_not_the_stream(
    server: EmbeddedServer, client: Client, sender: Client, collect: Start
) -> None:
    c = await collect(max_size=64 * 1024)
    await server.broadcast_raw('{"type": "x", "pad": "' + "y" * 200_000 + '"}')
    await send_all(sender, "general", ["still here"])
    await c.wait_until(lambda: c.contents() == ["still here"])
    error = next(s.error for s in c.states if s.state == "reconnecting")
    assert error is not None and "by the client (1009" in error


async def test_a_consumer_that_stops_reading(
    server: EmbeddedServer, client: Client, sender: Client
) -> None:
    got: list[str] = []
    kinds: list[str] = []
    resume = asyncio.Event()
    done = asyncio.Event()
    expected = [f"n{i:03d}" for i in range(300)]

    async def consume() -> None:
        async for ev in client.events(max_queue=8):
            kinds.append("recovered" if getattr(ev, "recovered", False) else ev.type)
            if isinstance(ev, ChatSent):
                got.append(ev.chat.content)
                if len(got) == 1:
                    await resume.wait()  # the consumer stops reading here
                if len(got) == len(expected):
                    done.set()
                    return

    task = asyncio.create_task(consume())
    await async_wait_until(lambda: client._streams and client._streams[-1].connected)
    await send_all(sender, "general", expected[:150])  # 149 of them while stalled
    # A server that gives up on a stalled client closes its connection (the
    # embedded one buffers instead; upstream's closes): the frames already in
    # our buffers are still delivered, the rest must be recovered.
    await server.drop_connections(code=4000)
    await send_all(sender, "general", expected[150:])
    resume.set()
    async with asyncio.timeout(20):
        await done.wait()
    await task
    assert got == expected  # nothing lost, nothing twice, in order
    assert "recovered" in kinds and kinds.count(GAP_TYPE) == 1


async def test_client_frames_over_the_socket(
    client: Client, sender: Client, collect: Start
) -> None:
    c = await collect()
    general = await client.channel("general")
    await client.typing("general")
    await client.write("#general", "written over the socket")
    await c.wait_until(lambda: c.contents() == ["written over the socket"])
    chat = next(ev for ev in c.events if isinstance(ev, ChatSent)).chat
    assert chat.created_at > 0  # sentAt was sent (upstream stores 0 otherwise)
    await client.react_frame(chat.id, "👍")
    await c.wait_until(lambda: any(ev.type == "chat_reactions_updated" for ev in c.events))
    typing = [ev for ev in c.events if isinstance(ev, ChatTyping)]
    assert typing and typing[0].channel_id == general.id
    # Without an open stream of its own, a short connection carries the frame.
    await sender.typing("general")
    await c.wait_until(lambda: len([e for e in c.events if isinstance(e, ChatTyping)]) == 2)


async def test_channel_filter_live_and_recovered(
    server: EmbeddedServer, client: Client, sender: Client, collect: Start
) -> None:
    other = await client.create_channel("elsewhere")
    c = await collect(channels=["#general"])
    await send_all(sender, other.id, ["other-live"])
    await send_all(sender, "general", ["general-live"])
    await c.wait_until(lambda: c.contents() == ["general-live"])
    server.refuse_connections(0.5)
    await server.drop_connections()
    await send_all(sender, other.id, ["other-missed"])
    await send_all(sender, "general", ["general-missed"])
    await send_all(sender, "general", ["sentinel"])  # behind anything still coming
    await c.wait_until(lambda: "sentinel" in c.contents())
    assert c.contents() == ["general-live", "general-missed", "sentinel"]
    assert "general-missed" in recovered(c) or c.contents()[-2] == "general-missed"


async def test_an_invalid_token_ends_the_stream(server: EmbeddedServer) -> None:
    async with Client(server.url, token="not.a.token") as client:
        with pytest.raises(NotAuthenticated):
            async for _ in client.events():
                pass


async def test_handshake_401_renews_the_token(admin_password: str) -> None:
    cfg = ServerConfig(admin_password=admin_password, token_seconds=2.0)
    async with (
        EmbeddedServer(cfg) as server,
        Client(
            server.url, username="admin", password=admin_password, stream_options=FAST_STREAM
        ) as client,
    ):
        c = Collector(client.events(on_state=lambda s: c.on_state(s))).start()
        await c.wait_connected()
        first = client.token
        # A token the server rejects but the client thinks fresh (no early
        # renewal): the reconnect's handshake must say 401, and be renewed.
        forged = forged_token(time.time() + 3600)
        client.rest.tokens.set(forged)
        await server.drop_connections()
        await c.wait_until(lambda: sum(s.state == "connected" for s in c.states) >= 2)
        assert first is not None and client.token not in (forged, None)
        assert c.stream.connected
        await send_all(client, "general", ["after renewal"])
        await c.wait_until(lambda: c.contents() == ["after renewal"])
        assert c.error is None
        await c.stop()


async def test_closing_during_a_long_backoff_does_not_wait_it_out(
    server: EmbeddedServer, client: Client
) -> None:
    states: list[str] = []
    stream = client.events(
        backoff={"base": 30.0, "cap": 30.0}, on_state=lambda s: states.append(s.state)
    )

    async def run() -> None:
        async for _ in stream:
            pass

    task = asyncio.create_task(run())
    await async_wait_until(lambda: stream.connected, 5 * UNIT, "connected")
    server.refuse_connections(60)
    await server.drop_connections()
    await async_wait_until(lambda: "reconnecting" in states, 5 * UNIT, "reconnecting")
    async with asyncio.timeout(5):  # not 15 to 30 s
        await stream.aclose()
        await task
    assert states[-1] == "closed"
