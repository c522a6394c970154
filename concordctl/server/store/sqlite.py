"""The SQLite backend: the embedded default, a file or ``:memory:``.

No statement runs on the event loop thread. A file database has one writer
thread (SQLite allows one writer; a single thread also keeps commit order)
and a few reader threads with their own connections: WAL lets them read
while the writer writes, and ``sqlite3`` releases the GIL inside a query, so
one expensive search does not hold up anyone else. ``:memory:`` is one
connection, so it has one thread for everything: a throwaway test server.

Search indexes :func:`~concordctl.server.store.search.index_text` of each
chat in a contentless FTS5 table, filled by triggers through the
``concord_words`` SQL function every connection registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from concordctl.server.store.backend import (
    Backend,
    Conflict,
    Migration,
    Row,
    StoreError,
    Transaction,
)
from concordctl.server.store.records import username_key
from concordctl.server.store.search import SearchTerms, fts5_match, index_text

__all__ = ["MIGRATIONS", "SqliteBackend"]

T = TypeVar("T")

#: Reader threads of a file database.
DEFAULT_READERS = 3

_V1_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS server (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        name TEXT NOT NULL,
        description TEXT,
        icon_id INTEGER,
        default_channel_id INTEGER
    )""",
    """CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        password_changed_at INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        nickname TEXT NOT NULL,
        bio TEXT,
        avatar_id INTEGER
    )""",
    """CREATE TABLE IF NOT EXISTS images (
        id INTEGER PRIMARY KEY,
        content_type TEXT NOT NULL,
        data BLOB NOT NULL,
        created_at INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS channels (
        id INTEGER PRIMARY KEY,
        parent_channel_id INTEGER,
        ordinality INTEGER NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        capabilities TEXT,
        created_at INTEGER NOT NULL,
        created_by_user_id INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS channels_parent ON channels (parent_channel_id, ordinality)",
    """CREATE TABLE IF NOT EXISTS chats (
        id INTEGER PRIMARY KEY,
        created_at INTEGER NOT NULL,
        author_id INTEGER NOT NULL,
        channel_id INTEGER NOT NULL,
        thread_id INTEGER,
        content TEXT NOT NULL,
        edited INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS chats_channel_time ON chats (channel_id, created_at, id)",
    "CREATE INDEX IF NOT EXISTS chats_author_time ON chats (author_id, created_at, id)",
    "CREATE INDEX IF NOT EXISTS chats_thread_time ON chats (thread_id, created_at, id)",
    "CREATE INDEX IF NOT EXISTS chats_time ON chats (created_at, id)",
    """CREATE VIRTUAL TABLE IF NOT EXISTS chats_fts USING fts5 (
        content, content='chats', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    )""",
    """CREATE TRIGGER IF NOT EXISTS chats_fts_insert AFTER INSERT ON chats BEGIN
        INSERT INTO chats_fts (rowid, content) VALUES (new.id, new.content);
    END""",
    """CREATE TRIGGER IF NOT EXISTS chats_fts_delete AFTER DELETE ON chats BEGIN
        INSERT INTO chats_fts (chats_fts, rowid, content) VALUES ('delete', old.id, old.content);
    END""",
    """CREATE TRIGGER IF NOT EXISTS chats_fts_update AFTER UPDATE OF content ON chats BEGIN
        INSERT INTO chats_fts (chats_fts, rowid, content) VALUES ('delete', old.id, old.content);
        INSERT INTO chats_fts (rowid, content) VALUES (new.id, new.content);
    END""",
    """CREATE TABLE IF NOT EXISTS reactions (
        chat_id INTEGER NOT NULL,
        reaction TEXT NOT NULL,
        user_id INTEGER NOT NULL,
        UNIQUE (chat_id, reaction, user_id)
    )""",
)

_V2_ROLES_KEYS_WORDS = (
    # Usernames are unique by their NFKC + casefold key, not ASCII NOCASE.
    "ALTER TABLE users ADD COLUMN username_key TEXT",
    "UPDATE users SET username_key = concord_username_key(username)",
    # Two names the old NOCASE rule let in with one key ("Ärger", "ärger"):
    # the later one logs in as "ärger#<its id>" from now on.
    """UPDATE users SET username_key = username_key || '#' || id WHERE id IN (
        SELECT u.id FROM users u JOIN users v
        ON u.username_key = v.username_key AND v.id < u.id)""",
    "CREATE UNIQUE INDEX users_username_key ON users (username_key)",
    "ALTER TABLE users ADD COLUMN admin INTEGER NOT NULL DEFAULT 0",
    "UPDATE users SET admin = 1 WHERE username = 'admin'",
    "ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE images ADD COLUMN owner_id INTEGER",
    "UPDATE images SET owner_id = (SELECT id FROM users WHERE avatar_id = images.id)",
    "CREATE INDEX images_owner ON images (owner_id)",
    # Search indexes the words search.py makes, as PostgreSQL does.
    "DROP TRIGGER IF EXISTS chats_fts_insert",
    "DROP TRIGGER IF EXISTS chats_fts_delete",
    "DROP TRIGGER IF EXISTS chats_fts_update",
    "DROP TABLE IF EXISTS chats_fts",
    "CREATE VIRTUAL TABLE chats_words USING fts5 (words, content='', tokenize='ascii')",
    "INSERT INTO chats_words (rowid, words) SELECT id, concord_words(content) FROM chats",
    """CREATE TRIGGER chats_words_insert AFTER INSERT ON chats BEGIN
        INSERT INTO chats_words (rowid, words) VALUES (new.id, concord_words(new.content));
    END""",
    """CREATE TRIGGER chats_words_delete AFTER DELETE ON chats BEGIN
        INSERT INTO chats_words (chats_words, rowid, words)
        VALUES ('delete', old.id, concord_words(old.content));
    END""",
    """CREATE TRIGGER chats_words_update AFTER UPDATE OF content ON chats BEGIN
        INSERT INTO chats_words (chats_words, rowid, words)
        VALUES ('delete', old.id, concord_words(old.content));
        INSERT INTO chats_words (rowid, words) VALUES (new.id, concord_words(new.content));
    END""",
)

MIGRATIONS = (
    Migration(1, "the schema of releases before versioned migrations", _V1_SCHEMA),
    Migration(
        2, "roles, username keys, token versions, image owners, word index", _V2_ROLES_KEYS_WORDS
    ),
)


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.create_function("concord_words", 1, index_text, deterministic=True)
    db.create_function("concord_username_key", 1, username_key, deterministic=True)
    db.execute("PRAGMA foreign_keys=OFF")
    # A reader meeting the writer's checkpoint waits instead of failing.
    db.execute("PRAGMA busy_timeout=5000")
    return db


class _SqliteTransaction(Transaction):
    """Statements of one transaction, each run in the writer thread.

    ``BEGIN IMMEDIATE`` goes with the first statement, so a one-statement
    write costs one trip to the thread plus the commit.
    """

    def __init__(self, backend: SqliteBackend) -> None:
        self._backend = backend
        self.begun = False

    def _begin(self, db: sqlite3.Connection) -> None:
        if not self.begun:
            db.execute("BEGIN IMMEDIATE")
            self.begun = True

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        def run(db: sqlite3.Connection) -> int:
            self._begin(db)
            return db.execute(sql, params).rowcount

        return await self._backend._in_writer(run)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """On a reader thread (the one thread for ``:memory:``)."""

        def run(db: sqlite3.Connection) -> list[Row]:
            self._begin(db)
            return db.execute(sql, params).fetchall()

        return await self._backend._in_writer(run)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        def run(db: sqlite3.Connection) -> None:
            self._begin(db)
            db.executemany(sql, rows)

        await self._backend._in_writer(run)


class SqliteBackend(Backend):
    """SQLite through worker threads; see the module docstring."""

    name = "sqlite"
    reaction_order = "rowid"
    stores_words = False

    def __init__(self, path: str, readers: int = DEFAULT_READERS) -> None:
        self.path = path
        self.memory = path == ":memory:"
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="concord-sqlite-writer")
        self._write_db: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._local = threading.local()
        self._reader_dbs: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._readers = (
            self._writer
            if self.memory
            else ThreadPoolExecutor(readers, thread_name_prefix="concord-sqlite-reader")
        )

    @classmethod
    async def open(cls, path: str) -> SqliteBackend:
        """Open (creating it owner-only) the database at ``path`` and migrate it."""
        backend = cls(path)
        try:
            await backend._run(backend._writer, backend._open_writer)
            await backend.migrate(MIGRATIONS, path)
        except BaseException:
            await backend.close()
            raise
        return backend

    def _open_writer(self) -> None:
        path = self.path
        try:
            if not self.memory and not os.path.exists(path):
                # The database holds password hashes: owner-only from the first byte.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            db = _connect(path)
            if not self.memory:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from None
        self._write_db = db

    async def _run(self, executor: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    async def _in_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._write_db
        assert db is not None

        def run() -> T:
            try:
                return fn(db)
            except sqlite3.IntegrityError as exc:
                raise Conflict(str(exc)) from None

        return await self._run(self._writer, run)

    def _reader(self) -> sqlite3.Connection:
        if self.memory:
            assert self._write_db is not None
            return self._write_db
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = _connect(self.path)
            db.execute("PRAGMA query_only=ON")
            self._local.db = db
            with self._readers_lock:
                self._reader_dbs.append(db)
        return db

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self._run(
            self._readers, lambda: self._reader().execute(sql, params).fetchall()
        )

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Transaction]:
        """One transaction on the writer thread; ``BEGIN IMMEDIATE`` with its first statement."""
        async with self._write_lock:
            tx = _SqliteTransaction(self)
            try:
                yield tx
            except BaseException:
                if tx.begun:
                    await self._in_writer(lambda db: db.execute("ROLLBACK"))
                raise
            if tx.begun:
                await self._in_writer(lambda db: db.execute("COMMIT"))

    def fts_condition(self, terms: SearchTerms) -> tuple[str, Any]:
        """Membership in the FTS5 word table, with an FTS5 MATCH expression."""
        return "id IN (SELECT rowid FROM chats_words WHERE chats_words MATCH ?)", fts5_match(terms)

    async def count_matches(self, match: str, limit: int) -> int:
        """How many chats match an FTS5 expression, counting at most ``limit``."""
        rows = await self.fetch(
            "SELECT count(*) FROM (SELECT rowid FROM chats_words WHERE chats_words MATCH ? "
            "LIMIT ?)",
            (match, limit),
        )
        return int(rows[0][0])

    async def bulk_insert_chats(self, rows: Iterable[Sequence[Any]]) -> int:
        """One ``executemany`` in one transaction (the triggers index the words)."""
        listed = [tuple(r) for r in rows]
        async with self.write() as tx:
            await tx.executemany(
                "INSERT INTO chats (id, created_at, author_id, channel_id, thread_id, content, "
                "edited) VALUES (?, ?, ?, ?, ?, ?, 0)",
                listed,
            )
        return len(listed)

    async def explain(self, sql: str, params: Sequence[Any]) -> list[str]:
        """The query plan's details, for tests that pin the indexes down."""
        rows = await self.fetch("EXPLAIN QUERY PLAN " + sql, params)
        return [str(r[3]) for r in rows]

    async def analyze(self) -> None:
        """Refresh the planner's statistics (after a bulk load)."""
        await self.execute("ANALYZE")

    async def close(self) -> None:
        """Let the threads finish their statements, then close every connection."""
        loop = asyncio.get_running_loop()
        if self._readers is not self._writer:
            await loop.run_in_executor(None, self._readers.shutdown)
        await loop.run_in_executor(None, self._writer.shutdown)
        for db in self._reader_dbs:
            db.close()
        self._reader_dbs.clear()
        if self._write_db is not None:
            self._write_db.close()
            self._write_db = None
