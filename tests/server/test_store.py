"""Storage: ids, the query plans that keep latest/search fast at scale, FTS quoting.

A one-off run at 1,000,000 chats is in the README; here the plans are pinned
down (an index for every filter, no sort of the whole table), which is what
makes those figures hold, and cheap to check.
"""

from __future__ import annotations

import time

import pytest

from concordctl.server.store import EPOCH_MS, SearchFilter, SnowflakeGenerator, Store, fts_any_word


def test_snowflakes_are_upstream_shaped_and_increasing() -> None:
    ids = SnowflakeGenerator()
    values = [ids.next_id() for _ in range(10_000)]
    assert values == sorted(set(values))
    created_ms = (values[0] >> 22) + EPOCH_MS
    assert abs(created_ms - time.time() * 1000) < 5_000
    assert values[-1] < 2**63
    assert SnowflakeGenerator(floor=values[-1] + 10**12).next_id() > values[-1] + 10**12


def test_fts_query_quotes_every_word() -> None:
    assert fts_any_word("deploy done") == '"deploy" OR "done"'
    assert fts_any_word('a" OR b NEAR(c)') == '"a" OR "OR" OR "b" OR "NEAR" OR "c"'
    assert fts_any_word("*** --") is None


@pytest.fixture
def store() -> Store:
    s = Store(":memory:")
    s.seed("hash")
    rows = [(1000 + i, 7 + i % 3, 100 + i % 4, None, f"word{i % 10} text") for i in range(2000)]
    s.add_chats_bulk(rows)
    s._db.execute("ANALYZE")
    return s


def plan(store: Store, f: SearchFilter) -> str:
    stmt = store.search_sql(f)
    assert stmt is not None
    sql, params = stmt
    if f.query:
        assert f.query not in sql  # search text only ever travels as a parameter
    return " | ".join(store.explain(sql, params))


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
def test_search_plans_use_an_index_and_never_sort(
    store: Store, f: SearchFilter, index: str
) -> None:
    text = plan(store, f)
    assert f"USING INDEX {index}" in text or f"USING COVERING INDEX {index}" in text, text
    assert "TEMP B-TREE" not in text, text
    assert "SCAN chats " not in text.replace(f"SCAN chats USING INDEX {index}", ""), text


def test_latest_plan(store: Store) -> None:
    text = " | ".join(
        store.explain(
            "SELECT id FROM chats WHERE channel_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
            (101, 50),
        )
    )
    assert (
        "USING COVERING INDEX chats_channel_time" in text
        or "USING INDEX chats_channel_time" in text
    )
    assert "TEMP B-TREE" not in text
    assert [c.created_at for c in store.latest(101, 3)] == [2997, 2993, 2989]


def test_word_search_goes_through_fts(store: Store) -> None:
    text = plan(store, SearchFilter(query="word3"))
    assert "VIRTUAL TABLE INDEX" in text, text
    store.FTS_SORT_LIMIT = 100  # word3 matches 200: now a common word
    common = plan(store, SearchFilter(query="word3"))
    assert "VIRTUAL TABLE INDEX" in common and "INDEX chats_time" in common, common
    assert "TEMP B-TREE" not in common, common
    found = store.search(SearchFilter(query="WORD3", size=1000))
    assert len(found) == 200 and all("word3" in c.content for c in found)
    assert [c.created_at for c in found] == sorted((c.created_at for c in found), reverse=True)
