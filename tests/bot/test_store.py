"""The bot state store on SQLite (memory and file) and PostgreSQL."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from concordctl.bot.store import (
    PostgresState,
    SqliteState,
    StateError,
    StateHandle,
    Store,
    describe_state,
    open_state,
)
from concordctl.errors import UsageError


@pytest.fixture(params=["memory", "file", "postgres"])
def state_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return ":memory:"
    if request.param == "file":
        return str(tmp_path / "bot.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def handle(state_spec: str) -> AsyncIterator[StateHandle]:
    h = StateHandle(state_spec)
    try:
        yield h
    finally:
        await h.close()


async def test_get_set_delete_items(handle: StateHandle) -> None:
    strikes = Store(handle, "strikes")
    other = Store(handle, "other")
    assert await strikes.get("alice") is None
    assert await strikes.get("alice", default=0) == 0
    await strikes.set("alice", 2)
    await strikes.set(7, {"why": ["spam", "caps"], "ok": True, "score": 1.5})
    await other.set("alice", "not a strike")
    assert await strikes.get("alice") == 2
    assert await strikes.get("7") == {"why": ["spam", "caps"], "ok": True, "score": 1.5}
    assert [kv async for kv in strikes.items()] == [
        ("7", {"why": ["spam", "caps"], "ok": True, "score": 1.5}),
        ("alice", 2),
    ]
    assert await strikes.delete("alice") is True
    assert await strikes.delete("alice") is False
    assert await strikes.get("alice", "gone") == "gone"
    assert await other.get("alice") == "not a strike"
    await strikes.set("n", None)  # a stored null is a value, not a missing key
    assert await strikes.get("n", "default") is None


async def test_values_are_copies(handle: StateHandle) -> None:
    s = Store(handle, "s")
    value = {"list": [1, 2]}
    await s.set("k", value)
    value["list"].append(3)
    got = await s.get("k")
    assert got == {"list": [1, 2]}
    got["list"].append(9)
    assert await s.get("k") == {"list": [1, 2]}


async def test_non_json_values_and_bad_keys_are_refused(handle: StateHandle) -> None:
    s = Store(handle, "s")
    with pytest.raises(TypeError, match="JSON"):
        await s.set("k", object())
    with pytest.raises(TypeError, match="JSON"):
        await s.set("k", float("nan"))
    with pytest.raises(TypeError, match="keys are strings"):
        await s.get(("a", "b"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="JSON"):
        await s.update("k", lambda v: {1, 2})
    assert await s.get("k") is None  # the failed update left nothing behind


async def test_concurrent_updates_lose_nothing(handle: StateHandle) -> None:
    counter = Store(handle, "counter")

    async def slow_increment(v: int | None) -> int:
        await asyncio.sleep(0)  # the scenario: a suspension inside the read-modify-write
        return (v or 0) + 1

    results = await asyncio.gather(
        *(counter.update("n", lambda v: (v or 0) + 1) for _ in range(40)),
        *(counter.update("n", slow_increment) for _ in range(40)),
    )
    assert await counter.get("n") == 80
    assert sorted(results) == list(range(1, 81))  # each update saw the one before


async def test_update_that_raises_changes_nothing(handle: StateHandle) -> None:
    s = Store(handle, "s")
    await s.set("k", 1)

    def boom(v: int) -> int:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        await s.update("k", boom)
    assert await s.update("k", lambda v: v + 1) == 2


async def test_values_survive_reopening(state_spec: str) -> None:
    if state_spec == ":memory:":
        pytest.skip("memory is not durable by design")
    first = StateHandle(state_spec)
    await Store(first, "s").set("k", [1, "two"])
    await first.close()
    second = StateHandle(state_spec)
    try:
        assert await Store(second, "s").get("k") == [1, "two"]
    finally:
        await second.close()


async def test_two_handles_on_one_state_update_atomically(state_spec: str) -> None:
    """Two connections (as two replicas or two processes would have) racing on one key."""
    if state_spec == ":memory:":
        pytest.skip("two :memory: handles are two databases")
    a, b = StateHandle(state_spec), StateHandle(state_spec)
    try:
        sa, sb = Store(a, "c"), Store(b, "c")
        await asyncio.gather(
            *(s.update("n", lambda v: (v or 0) + 1) for _ in range(30) for s in (sa, sb))
        )
        assert await sa.get("n") == 60
        assert await sb.get("n") == 60
    finally:
        await a.close()
        await b.close()


async def test_handles_opening_one_new_file_at_once(tmp_path: Path) -> None:
    """Two handles opening a new file together and writing at once used to fail
    about one time in eight with "database is locked": switching to WAL and
    creating the table are refused at once, without SQLite's busy timeout,
    while the other connection is doing the same or is inside its first write.
    Forty new files, two handles each."""
    for n in range(40):
        path = str(tmp_path / f"bot{n}.db")
        a, b = StateHandle(path), StateHandle(path)
        try:
            await asyncio.gather(
                *(Store(h, "s").update("n", lambda v: (v or 0) + 1) for h in (a, b, a, b))
            )
            assert await Store(a, "s").get("n") == 4
        finally:
            await a.close()
            await b.close()


def _increment_in_process(path: str, times: int) -> None:
    async def main() -> None:
        h = StateHandle(path)
        try:
            for _ in range(times):
                await Store(h, "c").update("n", lambda v: (v or 0) + 1)
        finally:
            await h.close()

    asyncio.run(main())


def test_sqlite_file_update_is_atomic_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_increment_in_process, args=(path, 25)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    conn = sqlite3.connect(path)
    try:
        (value,) = conn.execute(
            "SELECT value FROM concordctl_state WHERE ns = 'c' AND key = 'n'"
        ).fetchone()
    finally:
        conn.close()
    assert value == "75"


def test_open_state_picks_the_backend() -> None:
    assert isinstance(open_state(None), SqliteState)
    assert isinstance(open_state(":memory:"), SqliteState)
    assert isinstance(open_state("bot.db"), SqliteState)
    assert isinstance(open_state("postgresql://u@127.0.0.1/db"), PostgresState)
    with pytest.raises(UsageError, match="unsupported state URL"):
        open_state("redis://127.0.0.1")
    with pytest.raises(UsageError):
        open_state("  ")


def test_describe_state_hides_the_password() -> None:
    text = describe_state("postgresql://bot:s3cret@db.example:5432/bot")
    assert "s3cret" not in text
    assert text == "postgresql://bot:***@db.example:5432/bot"


async def test_a_state_file_in_a_missing_directory_is_one_clear_error(tmp_path: Path) -> None:
    h = StateHandle(str(tmp_path / "nope" / "bot.db"))
    with pytest.raises(StateError, match=r"cannot open the state file .*no directory"):
        await Store(h, "s").get("k")


async def test_an_unreachable_postgres_is_one_clear_error() -> None:
    # Port 9 (discard) on loopback: nothing listens, so the connection is refused.
    h = StateHandle("postgresql://bot:hunter2@127.0.0.1:9/bot")
    with pytest.raises(StateError) as info:
        await Store(h, "s").get("k")
    assert "cannot open the PostgreSQL state" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_store_needs_a_namespace() -> None:
    with pytest.raises(UsageError):
        Store(StateHandle(None), "")
