"""The two storage backends: same answers, versioned schemas, nobody stalled.

Each test runs on a SQLite file (the reader threads only exist for files) and
on a fresh PostgreSQL database (skipped with a reason without
``CONCORD_TEST_POSTGRES``).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from concordctl.server import EmbeddedServer, ServerConfig
from concordctl.server.store import SchemaTooNew, SearchFilter, Store, StoreError, open_store
from concordctl.server.store.postgres import redact_dsn
from concordctl.server.store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from tests.helpers.timing import UNIT
from tests.server.helpers import login


@pytest.fixture(params=["sqlite-file", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return str(tmp_path / "server.db")


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    s = await open_store(database)
    await s.seed("hash")
    yield s
    await s.close()


CONTENTS = [
    "deploy failed on staging",
    "Deploy OK",
    "the build failed, deploy cancelled",
    "Ärger mit dem Déploiement",
    "failed deploy",
    "straße and STRASSE",
    "x" * 300 + " long",
]


async def test_search_means_the_same_on_both_backends(store: Store) -> None:
    chats = [
        await store.add_chat(
            channel_id=5, author_id=1, content=c, created_at=100 + i, thread_id=None
        )
        for i, c in enumerate(CONTENTS)
    ]

    index = {chat.id: i for i, chat in enumerate(chats)}

    async def found(query: str) -> list[int]:
        return [index[c.id] for c in await store.search(SearchFilter(query=query, size=100))]

    assert await found("deploy failed") == [4, 2, 0]  # all the words, newest first
    assert await found('"deploy failed"') == [0]  # the phrase
    assert await found('"failed deploy"') == [4, 2]  # punctuation does not break a phrase
    assert await found('failed "deploy cancelled"') == [2]
    assert await found("ARGER deploiement") == [3]  # case and diacritics fold
    assert await found("strasse") == [5]
    assert await found("x" * 300) == [6]  # words are cut at 256 characters on both
    assert await found("deploy nothing") == []
    assert await found("& | ! <-> : * NEAR OR") == [] and await found("'") == []
    # an edit re-indexes; a deletion unindexes
    await store.edit_chat(chats[1].id, "rollback done")
    assert await found("deploy ok") == [] and await found("rollback") == [1]
    await store.delete_chat(chats[0].id)
    assert await found('"deploy failed"') == []


async def test_reactions_keep_their_order(store: Store) -> None:
    chat = await store.add_chat(
        channel_id=5, author_id=1, content="hi", created_at=1, thread_id=None
    )
    for user, reaction in [(1, "🎉"), (2, "👍"), (3, "🎉"), (2, "🎉"), (2, "👍")]:
        await store.react(chat.id, user, reaction, True)
    await store.react(chat.id, 3, "🎉", False)
    assert await store.reactions(chat.id) == {"🎉": [1, 2], "👍": [2]}
    fetched = await store.chat(chat.id)
    assert fetched is not None and list(fetched.reactions.items()) == [("🎉", 2), ("👍", 1)]


async def test_ids_continue_above_the_stored_ones(database: str) -> None:
    first = await open_store(database)
    await first.seed("hash")
    chat = await first.add_chat(
        channel_id=5, author_id=1, content="a", created_at=1, thread_id=None
    )
    await first.close()
    again = await open_store(database)
    try:
        assert again.ids.next_id() > chat.id
        assert not await again.seed("other")  # seeding twice writes nothing
    finally:
        await again.close()


async def test_a_newer_schema_is_refused(database: str) -> None:
    store = await open_store(database)
    await store.backend.execute("INSERT INTO schema_version (version) VALUES (?)", (99,))
    await store.close()
    with pytest.raises(SchemaTooNew) as refused:
        await open_store(database)
    assert "schema version 99" in str(refused.value) and "upgrade concordctl" in str(refused.value)


def test_database_urls_lose_their_password_in_messages() -> None:
    assert redact_dsn("postgresql://u:pw@h:5/d?x=1") == "postgresql://u:***@h:5/d?x=1"
    assert redact_dsn("postgresql://u@h/d") == "postgresql://u@h/d"


async def test_unreachable_postgres_fails_in_one_line() -> None:
    with pytest.raises(StoreError) as failed:
        await open_store("postgresql://someone:secret@127.0.0.1:1/nothing", connect_timeout=1)
    message = str(failed.value)
    assert "cannot connect to PostgreSQL" in message and "secret" not in message
    assert "\n" not in message


def test_the_suites_spare_databases_report_an_unreachable_postgres() -> None:
    # What postgres_url turns into a skip (a failure under CI) on a machine whose
    # CONCORD_TEST_POSTGRES points nowhere: every take raises the connection error.
    import psycopg

    from tests.helpers.postgres import Spares

    spares = Spares("postgresql://someone@127.0.0.1:1/nothing?connect_timeout=1")
    try:
        for _ in range(2):
            with pytest.raises(psycopg.OperationalError):
                spares.take(timeout=10 * UNIT)
    finally:
        spares.close()


def test_a_database_from_before_migrations_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:  # what releases before versioned migrations made
        for statement in SQLITE_MIGRATIONS[0].statements:
            old.execute(statement)
        old.execute(
            "INSERT INTO users (id, username, password_hash, created_at, nickname) VALUES "
            "(1, 'admin', 'h', 0, 'admin'), (2, 'Ärger', 'h', 0, 'Ä'), (3, 'ärger', 'h', 0, 'ä')"
        )
        old.execute("INSERT INTO server VALUES (1, 'Old', NULL, NULL, NULL)")
        old.execute("INSERT INTO chats VALUES (10, 5, 2, 7, NULL, 'Deploy FAILED today', 0)")

    async def check() -> None:
        store = await open_store(str(path))
        try:
            assert await store.backend.schema_version() == SQLITE_MIGRATIONS[-1].version
            admin = await store.user_by_name("ADMIN")
            assert admin is not None and admin.admin
            first = await store.user_by_name("ÄRGER")
            assert first is not None and first.id == 2 and not first.admin
            twin = await store.user_by_name("ärger#3")  # NOCASE let both in; the later moves
            assert twin is not None and twin.username == "ärger"
            found = await store.search(SearchFilter(query='"deploy failed"'))
            assert [c.id for c in found] == [10]
            assert (await store.server()).name == "Old"
        finally:
            await store.close()

    asyncio.run(check())


async def _timed_get(http: httpx.AsyncClient, path: str, token: str) -> float:
    started = time.perf_counter()
    response = await http.get(path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


async def test_an_expensive_search_does_not_stall_other_users(
    database: str, admin_password: str
) -> None:
    config = ServerConfig(db_path=database, admin_password=admin_password)
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        rnd = random.Random(7)
        vocab = [f"w{i}" for i in range(8)]
        await server.store.add_chats_bulk(
            (1000 + i, 1, 5, None, " ".join(rnd.choice(vocab) for _ in range(40)))
            for i in range(20_000)
        )
        searcher = await login(http, "admin", admin_password)
        other = await http.post("/api/users/register", json={"username": "o", "password": "p"})
        assert other.status_code == 200
        bystander = await login(http, "o", "p")
        light = "/api/self"
        heavy = "/api/chats?size=1000&query=" + '"' + " ".join(vocab * 37) + '"'

        unloaded = statistics.median(
            [await _timed_get(http, light, bystander.token) for _ in range(30)]
        )
        started = time.perf_counter()
        search = asyncio.create_task(_timed_get(http, heavy, searcher.token))
        loaded: list[float] = []
        while not search.done():
            loaded.append(await _timed_get(http, light, bystander.token))
        heavy_seconds = await search
        assert time.perf_counter() - started >= heavy_seconds
        # The search must be expensive enough that a stall would show: behind
        # a stalled loop the light requests would take a good part of
        # heavy_seconds, failing the checks below. 10x leaves room for the
        # light request's own noise on a busy machine (20x failed once at 18x).
        assert heavy_seconds > 10 * unloaded, (heavy_seconds, unloaded)
        assert len(loaded) >= 5, (len(loaded), heavy_seconds, unloaded)
        # ...and the others keep about their usual latency meanwhile.
        during = statistics.median(loaded)
        assert during < 10 * unloaded, (during, unloaded, heavy_seconds)
        assert during < heavy_seconds / 5, (during, heavy_seconds)
