"""Storage: ids, the query plans that keep latest/search fast at scale, query parsing.

A one-off run at 1,000,000 chats is in the README; here the SQLite plans are
pinned down (an index for every filter, no sort of the whole table), which is
what makes those figures hold, and cheap to check.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from concordctl.ids import EPOCH_MS, SnowflakeGenerator
from concordctl.server.store import SearchFilter, Store, open_store
from concordctl.server.store.search import (
    fts5_match,
    parse_query,
    search_words,
    tsquery,
    tsvector,
)
from concordctl.server.store.sqlite import SqliteBackend


def test_snowflakes_are_upstream_shaped_and_increasing() -> None:
    ids = SnowflakeGenerator()
    values = [ids.next_id() for _ in range(10_000)]
    assert values == sorted(set(values))
    created_ms = (values[0] >> 22) + EPOCH_MS
    assert abs(created_ms - time.time() * 1000) < 5_000
    assert values[-1] < 2**63
    assert SnowflakeGenerator(floor=values[-1] + 10**12).next_id() > values[-1] + 10**12


def test_words_fold_case_and_diacritics() -> None:
    assert search_words("Ärger, DEPLOY-failed straße_x 3d") == [
        "arger", "deploy", "failed", "strasse", "x", "3d"
    ]  # fmt: skip
    assert search_words("*** --") == []


def test_queries_are_all_words_and_quoted_phrases() -> None:
    terms = parse_query('deploy "build failed" "unterminated x')
    assert terms is not None
    assert terms.terms == (("build", "failed"), ("unterminated", "x"), ("deploy",))
    assert fts5_match(terms) == '"build failed" AND "unterminated x" AND "deploy"'
    assert tsquery(terms) == "('build' <-> 'failed') & ('unterminated' <-> 'x') & ('deploy')"
    assert parse_query('"" ** ') is None


def test_query_syntax_in_user_text_is_inert() -> None:
    terms = parse_query("a' OR b NEAR(c) & !d:*")
    assert terms is not None
    assert fts5_match(terms) == '"a" AND "or" AND "b" AND "near" AND "c" AND "d"'
    assert "'a'" in tsquery(terms) and "!" not in tsquery(terms)


def test_tsvector_keeps_positions_for_phrases() -> None:
    assert tsvector("a b A c") == "'a':1,3 'b':2 'c':4"


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    s = await open_store(":memory:")
    await s.seed("hash")
    rows = [(1000 + i, 7 + i % 3, 100 + i % 4, None, f"word{i % 10} text") for i in range(2000)]
    await s.add_chats_bulk(rows)
    assert isinstance(s.backend, SqliteBackend)
    await s.backend.analyze()
    yield s
    await s.close()


async def plan(store: Store, f: SearchFilter) -> str:
    stmt = await store.search_sql(f)
    assert stmt is not None
    sql, params = stmt
    if f.query:
        assert f.query not in sql  # search text only ever travels as a parameter
    assert isinstance(store.backend, SqliteBackend)
    return " | ".join(await store.backend.explain(sql, params))


@pytest.mark.parametrize(
    ("f", "index"),
    [
        (SearchFilter(), "chats_time"),
        (SearchFilter(author_id=7), "chats_author_time"),
        (SearchFilter(channel_id=101), "chats_channel_time"),
        (SearchFilter(thread_id=55), "chats_thread_time"),
        (SearchFilter(channel_id=101, thread_id=-1), "chats_"),
        (SearchFilter(before=1500), "chats_time"),
        (SearchFilter(after=1500, channel_id=101), "chats_channel_time"),
    ],
)
async def test_search_plans_use_an_index_and_never_sort(
    store: Store, f: SearchFilter, index: str
) -> None:
    text = await plan(store, f)
    assert f"USING INDEX {index}" in text or f"USING COVERING INDEX {index}" in text, text
    assert "TEMP B-TREE" not in text, text
    assert "SCAN chats " not in text.replace(f"SCAN chats USING INDEX {index}", ""), text


async def test_latest_plan(store: Store) -> None:
    assert isinstance(store.backend, SqliteBackend)
    text = " | ".join(
        await store.backend.explain(
            "SELECT id FROM chats WHERE channel_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
            (101, 50),
        )
    )
    assert (
        "USING COVERING INDEX chats_channel_time" in text
        or "USING INDEX chats_channel_time" in text
    )
    assert "TEMP B-TREE" not in text
    assert [c.created_at for c in await store.latest(101, 3)] == [2997, 2993, 2989]


async def test_word_search_goes_through_fts(store: Store) -> None:
    text = await plan(store, SearchFilter(query="word3"))
    assert "VIRTUAL TABLE INDEX" in text, text
    store.FTS_SORT_LIMIT = 100  # word3 matches 200: now a common word
    common = await plan(store, SearchFilter(query="word3"))
    assert "VIRTUAL TABLE INDEX" in common and "INDEX chats_time" in common, common
    assert "TEMP B-TREE" not in common, common
    found = await store.search(SearchFilter(query="WORD3", size=1000))
    assert len(found) == 200 and all("word3" in c.content for c in found)
    assert [c.created_at for c in found] == sorted((c.created_at for c in found), reverse=True)


async def test_seed_lost_to_another_node_is_no_error(db: str, tmp_path: Path) -> None:
    """Two nodes seeding one new database: both may find no server row (on
    PostgreSQL, read committed), and the one whose admin row comes second must
    start anyway. Played here in order: B's check is made to see A's snapshot."""
    if db == ":memory:":
        db = str(tmp_path / "concord.db")  # one database for both stores
    a, b = await open_store(db), await open_store(db)
    try:
        assert await a.seed("hash-a")
        write = b.backend.write

        @contextlib.asynccontextmanager
        async def checked_before_a_committed() -> AsyncIterator[Any]:
            async with write() as tx:
                fetch = tx.fetch

                async def fetch_as_before(sql: str, params: Any = ()) -> Any:
                    if sql == "SELECT 1 FROM server WHERE id = 1":
                        return []
                    return await fetch(sql, params)

                tx.fetch = fetch_as_before  # type: ignore[method-assign]
                yield tx

        b.backend.write = checked_before_a_committed  # type: ignore[method-assign]
        assert await b.seed("hash-b") is False
        b.backend.write = write  # type: ignore[method-assign]
        admin = await b.user_by_name("admin")
        assert admin is not None and admin.password_hash == "hash-a"
    finally:
        await a.close()
        await b.close()
