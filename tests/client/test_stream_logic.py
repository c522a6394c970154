"""The stream's decisions without sockets: dedupe, recovery paging, backoff, limits."""

from __future__ import annotations

import logging

import pytest

from concordctl import protocol as p
from concordctl.backoff import Backoff
from concordctl.recovery import (
    SeenChats,
    recover_missed_chats,
    select_recovered,
    snowflake_id,
    snowflake_time,
)
from concordctl.stream import WarnLimiter


def chat(cid: int, created: int = 0, channel: int = 1) -> p.Chat:
    return p.Chat(
        id=cid,
        created_at=created,
        author_id=9,
        channel_id=channel,
        thread_id=None,
        content=f"c{cid}",
        edited=False,
        reactions={},
    )


def test_seen_chats_dedupes_in_bounded_memory() -> None:
    seen = SeenChats(window=4)
    assert all(seen.add(i) for i in (10, 11, 12))
    assert not seen.add(11) and 11 in seen and 13 not in seen
    assert seen.add(5)  # older but never seen: new (out-of-order delivery)
    assert not seen.add(5)
    for i in range(20, 40):
        assert seen.add(i)
    assert len(seen) <= 8  # two generations of at most 4
    assert 10 in seen  # forgotten, but at or below the floor: counts as seen
    assert 39 in seen and 40 not in seen
    assert seen.add(41) and seen.add(40)  # out of order above the floor: still new


def test_seen_chats_lookups_stay_correct_across_rotations() -> None:
    seen = SeenChats(window=3)
    for i in (1, 3, 5, 7, 9, 11, 13):
        seen.add(i)
    assert not seen.add(13) and not seen.add(11)
    assert seen.add(12)  # between kept ids, never seen
    assert seen.first() is not None


def test_select_recovered_orders_by_id_and_skips_seen_and_old() -> None:
    seen = SeenChats()
    seen.add(105)
    # createdAt is the sender's clock: not the order; ids are.
    chats = [chat(107, created=1), chat(105, created=5), chat(106, created=9), chat(107, 1)]
    assert [c.id for c in select_recovered(chats, seen)] == [106, 107]
    assert [c.id for c in select_recovered(chats, seen, after_id=106)] == [107]


class FakeServer:
    """GET /chats over a list: newest first, paged; optionally capping size."""

    def __init__(self, chats: list[p.Chat], cap: int | None = None, ignore_page: bool = False):
        self.chats = sorted(chats, key=lambda c: c.id, reverse=True)
        self.cap = cap
        self.ignore_page = ignore_page
        self.calls: list[tuple[int | None, int, int]] = []

    async def __call__(
        self, *, channel_id: int | None, after: int, page: int, size: int
    ) -> list[p.Chat]:
        self.calls.append((channel_id, after, page))
        size = min(size, self.cap) if self.cap else size
        rows = [
            c
            for c in self.chats
            if c.created_at > after and (channel_id is None or c.channel_id == channel_id)
        ]
        start = 0 if self.ignore_page else page * size
        return rows[start : start + size]


async def test_recovery_pages_until_an_empty_page_even_when_the_server_caps_size() -> None:
    server = FakeServer([chat(i, created=i) for i in range(1, 251)], cap=40)
    got = await recover_missed_chats(server, after=10, channel_ids=None, page_size=100)
    assert sorted(c.id for c in got) == list(range(11, 251))
    assert len(server.calls) == 7  # 6 full pages of 40 (not 100: no early stop), 1 empty


async def test_recovery_stops_when_a_server_ignores_page() -> None:
    server = FakeServer([chat(i, created=i) for i in range(1, 20)], ignore_page=True)
    got = await recover_missed_chats(server, after=0, channel_ids=None, page_size=5)
    assert len(got) == 5 and len(server.calls) == 2


async def test_recovery_per_channel() -> None:
    chats = [chat(i, created=i, channel=1 + i % 3) for i in range(1, 31)]
    server = FakeServer(chats)
    got = await recover_missed_chats(server, after=0, channel_ids=[1, 2], page_size=100)
    assert {c.channel_id for c in got} == {1, 2} and len(got) == 20
    assert {call[0] for call in server.calls} == {1, 2}


def test_backoff_is_capped_exponential_with_jitter() -> None:
    high = Backoff(base=0.5, cap=8.0, rand=lambda: 0.0)
    low = Backoff(base=0.5, cap=8.0, rand=lambda: 0.999999)
    assert [high.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert all(low.delay(n) >= high.delay(n) / 2 - 1e-6 for n in range(6))
    assert Backoff().delay(10_000) <= 30.0  # no overflow for a server down for days
    real = Backoff(base=1.0, cap=4.0)
    assert len({real.delay(5) for _ in range(20)}) > 1  # jittered


def test_warn_limiter(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("concordctl.test")
    limiter = WarnLimiter(interval=3600)
    with caplog.at_level(logging.WARNING, logger="concordctl.test"):
        assert limiter.warn(log, "bad %s", 1)
        assert not limiter.warn(log, "bad %s", 2)
        assert not limiter.warn(log, "bad %s", 3)
        limiter.last -= 7200
        assert limiter.warn(log, "bad %s", 4)
    assert [r.getMessage() for r in caplog.records] == [
        "bad 1",
        "bad 4 (2 similar warnings suppressed)",
    ]


def test_snowflakes() -> None:
    cid = 678765762797633536  # issued by the embedded server
    ms = snowflake_time(cid)
    assert snowflake_id(ms) >= cid and snowflake_id(ms - 1) < cid
