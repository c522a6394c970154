"""Claims, takeover, leases, reply de-duplication and the cursor, without a bot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from concordctl.bot.claims import Claim, Coordinator, CursorTracker, current_claim, event_key
from concordctl.bot.store import StateHandle
from concordctl.protocol import Chat, ChatReactionsUpdated, ChatSent
from tests.helpers.timing import UNIT, async_wait_until


def chat(chat_id: int, content: str = "!ping", author: int = 7, channel: int = 1) -> Chat:
    return Chat(
        id=chat_id,
        created_at=1_700_000_000_000 + chat_id,
        author_id=author,
        channel_id=channel,
        thread_id=None,
        content=content,
        edited=False,
        reactions={},
    )


def test_event_keys() -> None:
    assert event_key(ChatSent(chat=chat(5))) == "chat:5"
    assert event_key(ChatSent(chat=chat(5), recovered=True)) == "chat:5"
    reacted = ChatReactionsUpdated(chat_id=5, channel_id=1, thread_id=None, reactions={"x": [1]})
    same = ChatReactionsUpdated(chat_id=5, channel_id=1, thread_id=None, reactions={"x": [1]})
    other = ChatReactionsUpdated(chat_id=5, channel_id=1, thread_id=None, reactions={"x": [1, 2]})
    assert event_key(reacted) == event_key(same) != event_key(other)
    assert event_key(reacted).startswith("chat_reactions_updated:")


def test_cursor_waits_for_the_oldest_open_chat() -> None:
    c = CursorTracker(10)
    c.received(11, 0)
    assert c.safe == 11
    c.received(12, 2)
    c.received(13, 1)
    c.received(14, 0)
    assert c.safe == 11
    c.settled(13)
    assert c.safe == 11  # 12 is still open
    c.settled(12)
    assert c.safe == 11
    c.settled(12)
    assert c.safe == 14
    assert c.pending == 0


@pytest.fixture(params=["file", "postgres"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return str(tmp_path / "bot.db")
    return str(request.getfixturevalue("postgres_url"))


async def open_coordinator(spec: str, lease: float = 6.0) -> Coordinator:
    coord = Coordinator(StateHandle(spec), lease=lease)
    await coord.open()
    return coord


@pytest.fixture
async def coords(spec: str) -> AsyncIterator[list[Coordinator]]:
    made: list[Coordinator] = []
    yield made
    for c in made:
        await c.close()
        await c.handle.close()


async def test_a_call_is_claimed_once_and_a_done_claim_stays_done(
    spec: str, coords: list[Coordinator]
) -> None:
    a = await open_coordinator(spec)
    coords.append(a)
    ev = ChatSent(chat=chat(100))
    claim = await a.acquire("ping", ev)
    assert claim is not None and claim.attempt == 1
    assert await a.acquire("ping", ev) is None  # the same call again: skipped
    assert await a.acquire("other", ev) is not None  # another handler has its own claim
    await a.finish(claim)
    assert await a.acquire("ping", ChatSent(chat=chat(100), recovered=True)) is None


async def test_a_restart_runs_the_unfinished_claims_again_with_their_replies(
    spec: str, coords: list[Coordinator], tmp_path: Path
) -> None:
    first = await open_coordinator(spec, lease=0.5)
    ev = ChatSent(chat=chat(200, "!deploy web"))
    claim = await first.acquire("deploy", ev)
    assert claim is not None
    sent: list[str] = []

    async def send(text: str) -> Chat:
        sent.append(text)
        return chat(1000 + len(sent), text, author=99)

    one = await first.send_once(claim, 1, "deploying web", lambda: send("deploying web"))
    # Killed here: no finish, no close (the heartbeat row simply stops).
    await first.handle.close()

    second = await open_coordinator(spec, lease=0.3)
    coords.append(second)
    rerun: list[Claim] = []
    second.redispatch = rerun.append
    if second.shared:  # PostgreSQL: the first owner's heartbeat must run out first
        await async_wait_until(lambda: second.sweep(), timeout=10 * UNIT, what="takeover")
    else:
        assert await second.sweep() == 1
    assert len(rerun) == 1
    again = rerun[0]
    assert again.handler == "deploy" and again.attempt == 2
    assert isinstance(again.event, ChatSent) and again.event.recovered
    assert again.event.chat.id == 200
    # The re-run's first send is the recorded one; its second is new.
    token = current_claim.set(again)
    try:
        replay = await second.send_once(again, 1, "deploying web", lambda: send("x"))
        fresh = await second.send_once(again, 1, "done", lambda: send("done"))
    finally:
        current_claim.reset(token)
    assert replay == one
    assert sent == ["deploying web", "done"]
    assert fresh.content == "done"
    await second.finish(again)
    assert await second.sweep() == 0


async def test_a_rerun_finds_a_reply_sent_but_not_recorded(
    spec: str, coords: list[Coordinator]
) -> None:
    first = await open_coordinator(spec, lease=0.5)
    claim = await first.acquire("ping", ChatSent(chat=chat(300)))
    assert claim is not None
    await first.handle.close()  # killed after the server took "pong" but before the record
    second = await open_coordinator(spec, lease=0.3)
    coords.append(second)
    rerun: list[Claim] = []
    second.redispatch = rerun.append

    already = chat(301, "pong", author=99)

    async def probe(channel: int | str, content: str, after_id: int) -> list[Chat]:
        return [already] if (channel, content, after_id) == (1, "pong", 300) else []

    second.probe = probe
    await async_wait_until(lambda: second.sweep(), timeout=10 * UNIT, what="takeover")
    sent: list[str] = []

    async def send() -> Chat:
        sent.append("pong")
        return chat(302, "pong", author=99)

    assert await second.send_once(rerun[0], 1, "pong", send) == already
    assert sent == []


async def test_cursor_is_saved_and_read_back(spec: str, coords: list[Coordinator]) -> None:
    a = await open_coordinator(spec)
    a.cursor.received(41, 0)
    a.cursor.received(42, 1)
    await a.save_cursor()
    await a.close()
    await a.handle.close()
    b = await open_coordinator(spec)
    coords.append(b)
    assert b.cursor.safe == 41


async def test_replicas_share_claims_and_one_holds_a_lease(postgres_url: str) -> None:
    a = await open_coordinator(postgres_url, lease=2.0)
    b = await open_coordinator(postgres_url, lease=2.0)
    try:
        a.start()
        b.start()
        wins = [
            (await a.acquire("ping", ChatSent(chat=chat(i))) is not None)
            + (await b.acquire("ping", ChatSent(chat=chat(i))) is not None)
            for i in range(500, 520)
        ]
        assert wins == [1] * 20
        assert await a.may_run("tick") is True
        assert await b.may_run("tick") is False
        assert await a.may_run("tick") is True
        # a dies (its heartbeat stops): b gets the lease within the lease time.
        for task in a._tasks:
            task.cancel()
        await async_wait_until(lambda: b.may_run("tick"), timeout=5 * UNIT, what="lease")
        assert await a.may_run("tick") is False
    finally:
        for c in (a, b):
            await c.close()
            await c.handle.close()


def test_the_lease_is_the_bots_and_must_be_positive(tmp_path: Path) -> None:
    from concordctl import Bot
    from concordctl.bot.state import Durable
    from concordctl.errors import UsageError

    async def no_periodic(route: object) -> None:
        return None

    bot = Bot(state=tmp_path / "state.db", lease=1.5)
    bot.state = tmp_path / "other.db"  # as `concordctl run --state` does: the lease stays
    coord = Durable(bot._state, no_periodic).coord
    assert coord is not None and coord.lease == 1.5
    assert Durable(Bot(state=tmp_path / "s.db")._state, no_periodic).coord.lease == 6.0  # type: ignore[union-attr]
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(UsageError, match="lease must be a positive"):
            Bot(lease=bad)
