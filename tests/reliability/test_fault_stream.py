"""client.events() through a misbehaving network: it reconnects, recovers every
chat sent meanwhile exactly once and in order, says it is reconnecting, and
notices a dead (silent) socket within a bounded time.

The client talks to the server through a FaultProxy; the chats are posted
straight to the server, so they are stored whatever the proxy does.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from faultproxy import FaultProxy
from streamcheck import (
    DEAD_SOCKET_BOUND,
    FAST,
    REST_TIMEOUT,
    Collector,
    Sender,
    assert_exactly_once_in_order,
)

from concordctl import Client, Gap
from concordctl.server import EmbeddedServer


@pytest.fixture
async def client(proxy: FaultProxy, admin_password: str) -> AsyncIterator[Client]:
    async with Client(
        proxy.url,
        username="admin",
        password=admin_password,
        config_path="/nonexistent",
        timeout=REST_TIMEOUT,
    ) as c:
        yield c


async def _collect(client: Client, **options: Any) -> Collector:
    collector = Collector()
    opts = FAST | options
    collector.start(client.events(on_state=collector.on_state, **opts))
    await collector.wait_for(lambda: "connected" in collector.state_names(), 10, "first connect")
    return collector


async def test_cut_then_refused_reconnects_and_recovers_in_order(
    client: Client, proxy: FaultProxy, sender: Sender
) -> None:
    collector = await _collect(client)
    live = await sender.send_many("before", 3)
    await collector.wait_for(collector.has_chats(live), 10, "live chats")

    await proxy.refuse(1.5)
    cut_at = time.monotonic()
    assert await proxy.cut() >= 1
    missed = await sender.send_many("during", 12)
    await collector.wait_for(collector.has_chats(missed), 15, "recovered chats")
    after = await sender.send_many("after", 3)
    await collector.wait_for(collector.has_chats(after), 10, "live chats after")
    await collector.stop()

    assert_exactly_once_in_order(collector, sender.sent)
    recovered = [e for e in collector.chats("during") if e.recovered]
    assert len(recovered) == 12, "chats sent while refused come from recovery"
    assert not any(e.recovered for e in collector.chats("after"))
    gaps = [e for e in collector.events if isinstance(e, Gap)]
    assert gaps and gaps[0].since <= gaps[0].until
    first_recovered = collector.events.index(recovered[0])
    assert isinstance(collector.events[first_recovered - 1], Gap), "the gap comes first"
    reconnecting = collector.first_state_after("reconnecting", cut_at)
    assert reconnecting is not None and reconnecting - cut_at < 2.0
    assert any(s.state == "reconnecting" and s.error for s in collector.states[1:])


async def test_stalled_socket_is_detected_within_the_bound(
    client: Client, proxy: FaultProxy, sender: Sender
) -> None:
    collector = await _collect(client)
    await collector.wait_for(collector.has_chats(await sender.send_many("a", 2)), 10, "live")

    stalled_at = time.monotonic()
    proxy.stall(existing_only=True)  # the old flow is dead; a new one would work
    missed = await sender.send_many("stalled", 5)
    await collector.wait_for(
        lambda: collector.first_state_after("reconnecting", stalled_at) is not None,
        DEAD_SOCKET_BOUND + 5,
        "noticing the dead socket",
    )
    detected = collector.first_state_after("reconnecting", stalled_at)
    assert detected is not None
    assert detected - stalled_at <= DEAD_SOCKET_BOUND, (
        f"dead socket noticed after {detected - stalled_at:.1f} s"
    )
    # Bounded: the pooled REST connection is as dead as the websocket, so the
    # first recovery call may wait out REST_TIMEOUT before a new connection.
    await collector.wait_for(
        collector.has_chats(missed), 2 * REST_TIMEOUT + DEAD_SOCKET_BOUND, "recovery after stall"
    )
    after = await sender.send_many("after", 2)
    await collector.wait_for(collector.has_chats(after), 10, "live after")
    await collector.stop()
    assert_exactly_once_in_order(collector, sender.sent)


async def test_total_stall_then_resume(client: Client, proxy: FaultProxy, sender: Sender) -> None:
    # Every connection, new ones too, goes silent: handshakes time out
    # (open_timeout) and the stream keeps trying until the network is back.
    collector = await _collect(client)
    await collector.wait_for(collector.has_chats(await sender.send_many("a", 2)), 10, "live")
    proxy.stall()
    stalled_at = time.monotonic()
    missed = await sender.send_many("stalled", 4)
    await collector.wait_for(
        lambda: collector.first_state_after("reconnecting", stalled_at) is not None,
        DEAD_SOCKET_BOUND + 5,
        "noticing the dead socket",
    )
    # A few handshakes time out meanwhile (open_timeout), and none connects.
    await collector.wait_for(
        lambda: (
            sum(
                t >= stalled_at and s.state == "reconnecting"
                for t, s in zip(collector.state_times, collector.states, strict=True)
            )
            >= 3
        ),
        15,
        "handshakes timing out",
    )
    assert collector.first_state_after("connected", stalled_at) is None
    proxy.resume()
    await collector.wait_for(collector.has_chats(missed), 15, "recovery after resume")
    await collector.stop()
    assert_exactly_once_in_order(collector, sender.sent)


async def test_bytes_dropped_mid_frame_lose_no_chat(
    client: Client, proxy: FaultProxy, sender: Sender
) -> None:
    collector = await _collect(client)
    await collector.wait_for(collector.has_chats(await sender.send_many("a", 2)), 10, "live")
    for round_ in range(3):
        proxy.drop_bytes(5 + round_ * 7, direction="down")
        chats = await sender.send_many(f"corrupt{round_}", 3)
        await collector.wait_for(collector.has_chats(chats), 15, f"chats of round {round_}")
    await collector.stop()
    assert_exactly_once_in_order(collector, sender.sent)


async def test_many_chats_missed_are_recovered_across_pages(
    client: Client, proxy: FaultProxy, sender: Sender
) -> None:
    collector = await _collect(client, recovery_page_size=20)
    await collector.wait_for(collector.has_chats(await sender.send_many("a", 1)), 10, "live")
    await proxy.refuse(30)
    await proxy.cut()
    missed = await sender.send_many("outage", 130)
    await proxy.accept_again()
    await collector.wait_for(collector.has_chats(missed), 20, "130 recovered chats")
    await collector.stop()
    assert_exactly_once_in_order(collector, sender.sent)


async def test_server_restart_and_dropped_connections(
    server: EmbeddedServer, client: Client, sender: Sender
) -> None:
    # Faults on the server side rather than the network: every socket closed
    # with 1012, handshakes refused with 503, then a full restart.
    collector = await _collect(client)
    await collector.wait_for(collector.has_chats(await sender.send_many("a", 2)), 10, "live")
    server.refuse_connections(1.0)
    await server.drop_connections(code=1012)
    missed = await sender.send_many("dropped", 5)
    await collector.wait_for(collector.has_chats(missed), 15, "recovery after 1012/503")
    await server.restart()
    restarted = await sender.send_many("restarted", 5)
    await collector.wait_for(collector.has_chats(restarted), 15, "chats after a restart")
    await collector.stop()
    assert_exactly_once_in_order(collector, sender.sent)
    errors = [s.error or "" for s in collector.states if s.state == "reconnecting"]
    assert any("1012" in e or "503" in e for e in errors), errors


async def test_filtered_stream_recovers_only_its_channel(
    client: Client, proxy: FaultProxy, sender: Sender
) -> None:
    other = await client.create_channel("elsewhere")
    collector = await _collect(client, channels=["general"])
    await collector.wait_for(collector.has_chats(await sender.send_many("a", 1)), 10, "live")
    await proxy.refuse(1.0)
    await proxy.cut()
    for i in range(4):
        await sender.send(f"other-{i}", channel_id=other.id)
        await sender.send(f"general-{i}")
    general = [c for c in sender.sent if c.channel_id == sender.channel_id]
    await collector.wait_for(collector.has_chats(general), 15, "recovered general chats")
    # Behind anything still coming: a live sentinel, after every other-channel chat.
    await collector.wait_for(collector.has_chats([await sender.send("general-end")]), 10, "end")
    await collector.stop()
    assert not collector.chats("other"), "a chat of another channel leaked in"
    assert_exactly_once_in_order(
        collector, [c for c in sender.sent if c.channel_id == sender.channel_id]
    )


async def test_recovery_after_a_dead_socket_does_not_wait_for_the_rest_timeout(
    proxy: FaultProxy, sender: Sender, admin_password: str
) -> None:
    async with Client(
        proxy.url, username="admin", password=admin_password, config_path="/nonexistent"
    ) as client:  # the default REST timeout (10 s)
        collector = await _collect(client)
        await collector.wait_for(collector.has_chats(await sender.send_many("a", 2)), 10, "live")
        proxy.stall(existing_only=True)
        missed = await sender.send_many("stalled", 3)
        try:
            await collector.wait_for(
                collector.has_chats(missed), DEAD_SOCKET_BOUND + 3.0, "recovery after the stall"
            )
        finally:
            await collector.stop()


async def test_a_corrupted_chat_frame_is_not_lost(
    client: Client, proxy: FaultProxy, sender: Sender
) -> None:
    collector = await _collect(client)
    await collector.wait_for(collector.has_chats(await sender.send_many("a", 2)), 10, "live")
    # The framing survives, only the JSON inside is broken: the stream cannot
    # tell which chat it was, so it must recover in place, before newer chats.
    proxy.corrupt_bytes(6)
    corrupted = await sender.send("corrupted")
    after = await sender.send_many("after", 3)
    try:
        await collector.wait_for(collector.has_chats([corrupted, *after]), 3, "every chat")
    finally:
        await collector.stop()
    assert_exactly_once_in_order(collector, sender.sent)
