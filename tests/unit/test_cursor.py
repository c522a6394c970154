"""StreamCursor and bounded recovery: the stream's decisions, with plain lists."""

from __future__ import annotations

import pytest

from concordctl import protocol as p
from concordctl.cursor import FUTURE_MS, Recovery, StreamCursor
from concordctl.recovery import recover_chats, snowflake_id, snowflake_time
from concordctl.streamstate import ConnectionState, IllegalTransition, StreamState, transition

NOW = 1_760_000_000_000


def chat(cid: int, channel: int = 1, content: str = "x") -> p.Chat:
    return p.Chat(
        id=cid,
        created_at=snowflake_time(cid),
        author_id=1,
        channel_id=channel,
        thread_id=None,
        content=content,
        edited=False,
        reactions={},
    )


def ids_at(ms: int, n: int) -> list[int]:
    return [(snowflake_id(ms) & ~((1 << 22) - 1)) + i for i in range(n)]


def test_live_chats_are_deduplicated_and_filtered() -> None:
    cursor = StreamCursor(channels=[1], clock=lambda: NOW)
    a, b, c = ids_at(NOW, 3)
    assert cursor.admit(chat(a)) and cursor.admit(chat(c))
    assert not cursor.admit(chat(a))  # a duplicate
    assert cursor.admit(chat(b))  # older than the newest, but unseen
    assert not cursor.admit(chat(ids_at(NOW + 1, 1)[0], channel=2))  # other channel
    assert cursor.keeps(p.ChatTyping(user_id=1, channel_id=1, thread_id=None, sent_at=0))
    assert not cursor.keeps(p.ChatDeleted(chat_id=1, channel_id=2, thread_id=None))
    assert cursor.keeps(p.UserJoined(user_id=3))  # of no channel


def test_an_id_from_the_far_future_is_refused_and_does_not_poison_the_window() -> None:
    cursor = StreamCursor(clock=lambda: NOW)
    assert not cursor.admit(chat(2**70))
    assert not cursor.admit(chat(snowflake_id(NOW + FUTURE_MS + 1000)))
    assert cursor.refused == 2
    later = ids_at(NOW + 5, 20_000)
    assert all(cursor.admit(chat(i)) for i in later)  # none looks "already seen"
    assert cursor.admit(chat(snowflake_id(NOW + FUTURE_MS - 1000)))  # tomorrow-ish is fine


def test_no_cursor_means_no_first_recovery_then_a_gap_from_last_alive() -> None:
    cursor = StreamCursor(margin_ms=100, clock=lambda: NOW)
    cursor.start()
    assert cursor.connected(NOW, start_boundary=snowflake_id(NOW)) is None
    first_live = ids_at(NOW + 10, 1)[0]
    assert cursor.admit(chat(first_live))
    cursor.alive(NOW + 500)
    cursor.disconnected()
    assert cursor.boundary == first_live - 1 and cursor.boundary_exact
    recovery = cursor.connected(NOW + 2000, start_boundary=0)
    assert recovery == Recovery(after=NOW + 400, since=NOW + 500, until=NOW + 2000)
    missed = [chat(i) for i in ids_at(NOW + 900, 2)]
    events = cursor.recovered(recovery, [missed[1], chat(first_live), missed[0]])
    assert events[0] == p.Gap(since=NOW + 500, until=NOW + 2000)
    assert [e.chat.id for e in events[1:]] == [m.id for m in missed]  # type: ignore[union-attr]
    assert all(e.recovered for e in events[1:])  # type: ignore[union-attr]
    assert cursor.recovered(recovery, missed) == [events[0]]  # each chat once


def test_since_starts_with_a_recovery_above_the_cursor() -> None:
    since = ids_at(NOW, 1)[0]
    cursor = StreamCursor(since=since, margin_ms=1000, clock=lambda: NOW)
    cursor.start(since_chat_time=NOW - 50)
    recovery = cursor.connected(NOW + 100, start_boundary=0)
    assert recovery == Recovery(after=NOW - 1050, since=NOW - 50, until=NOW + 100)
    events = cursor.recovered(recovery, [chat(since), chat(since + 1)], complete=False)
    assert events[0] == p.Gap(since=NOW - 50, until=NOW + 100, unrecovered=True)
    assert [e.chat.id for e in events[1:]] == [since + 1]  # type: ignore[union-attr]
    assert b'"unrecovered":true' in p.encode_event(events[0])
    assert b"unrecovered" not in p.encode_event(p.Gap(since=1, until=2))


async def test_recovery_is_bounded_in_chats_and_bytes() -> None:
    served = 0

    async def endless(*, channel_id: int | None, after: int, page: int, size: int) -> list[p.Chat]:
        nonlocal served
        served += size
        base = 10**12 + page * size
        return [chat(base + i, content="y" * 1000) for i in range(size)]

    found = await recover_chats(endless, after=0, channel_ids=None, page_size=100, max_chats=450)
    assert len(found.chats) == 450 and not found.complete and served == 500
    found = await recover_chats(endless, after=0, channel_ids=None, page_size=100, max_bytes=50_000)
    assert len(found.chats) < 60 and not found.complete

    async def finite(*, channel_id: int | None, after: int, page: int, size: int) -> list[p.Chat]:
        return [chat(10**12 + i) for i in range(3)] if page == 0 else []

    done = await recover_chats(finite, after=0, channel_ids=[1, 2])
    assert done.complete and len(done.chats) == 3


def test_state_transitions_live_in_one_table() -> None:
    state = StreamState(ConnectionState.CONNECTING)
    for name in ("recovering", "connected", "reconnecting", "connected", "closed"):
        state = transition(state, StreamState(name))  # type: ignore[arg-type]
    assert state.state == "closed" and state.state is ConnectionState.CLOSED
    assert ConnectionState.LIVE is ConnectionState.CONNECTED
    with pytest.raises(IllegalTransition):
        transition(state, StreamState(ConnectionState.LIVE))
    with pytest.raises(IllegalTransition):
        transition(StreamState("recovering"), StreamState("connecting"))  # type: ignore[arg-type]
