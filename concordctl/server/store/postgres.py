"""The PostgreSQL backend (``--db postgresql://...``): psycopg 3 and its async pool.

Every statement is awaited on a pooled connection, so the event loop never
waits for the database. Writes of one process go through one transaction at
a time (:meth:`PostgresBackend.write`), which keeps this node's broadcasts in
its commit order. Search uses a ``tsvector`` column with a GIN index, filled
from :func:`~concordctl.server.store.search.tsvector` (the same words SQLite
indexes) and queried with :func:`~concordctl.server.store.search.tsquery`.

psycopg is imported when a PostgreSQL database is opened, never before: the
SQLite default does not load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from concordctl.server.store.backend import (
    Backend,
    Conflict,
    Migration,
    Row,
    StoreError,
    Transaction,
)
from concordctl.server.store.search import SearchTerms, tsquery

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

__all__ = ["MIGRATIONS", "PostgresBackend", "redact_dsn"]

#: Connections per process: enough for a few slow searches beside quick requests.
DEFAULT_POOL_SIZE = 10
#: An arbitrary key for the advisory lock that serializes migrations across nodes.
_MIGRATION_LOCK = 0x636F6E636F7264

MIGRATIONS = (
    Migration(
        1,
        "the whole schema: roles, username keys, token versions, image owners, words",
        (
            """CREATE TABLE server (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                name TEXT NOT NULL,
                description TEXT,
                icon_id BIGINT,
                default_channel_id BIGINT
            )""",
            """CREATE TABLE users (
                id BIGINT PRIMARY KEY,
                username TEXT NOT NULL,
                username_key TEXT NOT NULL UNIQUE,
                password_hash TEXT NOT NULL,
                password_changed_at BIGINT NOT NULL DEFAULT 0,
                created_at BIGINT NOT NULL,
                nickname TEXT NOT NULL,
                bio TEXT,
                avatar_id BIGINT,
                admin BOOLEAN NOT NULL DEFAULT FALSE,
                token_version INTEGER NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE images (
                id BIGINT PRIMARY KEY,
                content_type TEXT NOT NULL,
                data BYTEA NOT NULL,
                created_at BIGINT NOT NULL,
                owner_id BIGINT
            )""",
            "CREATE INDEX images_owner ON images (owner_id)",
            """CREATE TABLE channels (
                id BIGINT PRIMARY KEY,
                parent_channel_id BIGINT,
                ordinality INTEGER NOT NULL,
                name TEXT NOT NULL,
                description TEXT,
                capabilities TEXT,
                created_at BIGINT NOT NULL,
                created_by_user_id BIGINT NOT NULL
            )""",
            "CREATE INDEX channels_parent ON channels (parent_channel_id, ordinality)",
            """CREATE TABLE chats (
                id BIGINT PRIMARY KEY,
                created_at BIGINT NOT NULL,
                author_id BIGINT NOT NULL,
                channel_id BIGINT NOT NULL,
                thread_id BIGINT,
                content TEXT NOT NULL,
                edited BOOLEAN NOT NULL DEFAULT FALSE,
                words TSVECTOR NOT NULL
            )""",
            "CREATE INDEX chats_channel_time ON chats (channel_id, created_at, id)",
            "CREATE INDEX chats_author_time ON chats (author_id, created_at, id)",
            "CREATE INDEX chats_thread_time ON chats (thread_id, created_at, id)",
            "CREATE INDEX chats_time ON chats (created_at, id)",
            "CREATE INDEX chats_words ON chats USING GIN (words)",
            """CREATE TABLE reactions (
                seq BIGSERIAL PRIMARY KEY,
                chat_id BIGINT NOT NULL,
                reaction TEXT NOT NULL,
                user_id BIGINT NOT NULL,
                UNIQUE (chat_id, reaction, user_id)
            )""",
        ),
    ),
)

_PLACEHOLDER = re.compile(r"\?")


def redact_dsn(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    user = parts.username or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class _PostgresTransaction(Transaction):
    def __init__(self, backend: PostgresBackend, conn: AsyncConnection[Any]) -> None:
        self._backend = backend
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        import psycopg

        try:
            cursor = await self._conn.execute(self._backend.sql(sql), params)
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict(str(exc).splitlines()[0]) from None
        return cursor.rowcount

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """On a pooled connection in autocommit mode."""
        cursor = await self._conn.execute(self._backend.sql(sql), params)
        return await cursor.fetchall()

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._conn.cursor() as cursor:
            await cursor.executemany(self._backend.sql(sql), list(rows))


class PostgresBackend(Backend):
    """PostgreSQL through an async connection pool; see the module docstring."""

    name = "postgresql"
    reaction_order = "seq"
    stores_words = True

    def __init__(self, url: str, pool: AsyncConnectionPool[Any]) -> None:
        self.url = url
        self._pool = pool
        self._write_lock = asyncio.Lock()
        self._sql: dict[str, str] = {}

    @classmethod
    async def open(
        cls, url: str, pool_size: int = DEFAULT_POOL_SIZE, connect_timeout: float = 10.0
    ) -> PostgresBackend:
        """Connect (failing within seconds when the server is not there) and migrate."""
        try:
            import psycopg
            from psycopg_pool import AsyncConnectionPool
        except ImportError as exc:  # pragma: no cover - psycopg is a dependency
            raise StoreError(
                f"PostgreSQL needs psycopg: pip install 'psycopg[binary]' ({exc})"
            ) from None
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            open=False,
            name="concordctl",
        )
        try:
            await pool.open(wait=True, timeout=connect_timeout)
        except (psycopg.Error, Exception) as exc:
            await pool.close()
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(
                f"cannot connect to PostgreSQL at {redact_dsn(url)}: {reason}"
            ) from None
        backend = cls(url, pool)
        try:
            await backend.migrate(MIGRATIONS, redact_dsn(url))
        except BaseException:
            await backend.close()
            raise
        return backend

    def sql(self, statement: str) -> str:
        """``statement`` with ``?`` placeholders as psycopg's ``%s``."""
        converted = self._sql.get(statement)
        if converted is None:
            converted = _PLACEHOLDER.sub("%s", statement.replace("%", "%%"))
            self._sql[statement] = converted
        return converted

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(self.sql(sql), params)
            rows: list[Row] = await cursor.fetchall()
            return rows

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Transaction]:
        """One transaction on a pooled connection; one at a time in this process."""
        async with self._write_lock, self._pool.connection() as conn, conn.transaction():
            yield _PostgresTransaction(self, conn)

    async def _lock_schema(self, tx: Transaction) -> None:
        await tx.fetch("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))

    def fts_condition(self, terms: SearchTerms) -> tuple[str, Any]:
        """The ``words`` tsvector matching a tsquery (GIN index)."""
        return "words @@ ?::tsquery", tsquery(terms)

    async def bulk_insert_chats(self, rows: Iterable[Sequence[Any]]) -> int:
        """``COPY`` in one transaction, each row with its tsvector."""
        from concordctl.server.store.search import tsvector

        count = 0
        async with self._write_lock, self._pool.connection() as conn, conn.transaction():
            cursor = conn.cursor()
            columns = "id, created_at, author_id, channel_id, thread_id, content, edited, words"
            async with cursor.copy(f"COPY chats ({columns}) FROM STDIN") as copy:
                for chat_id, created_at, author_id, channel_id, thread_id, content in rows:
                    await copy.write_row(
                        (
                            chat_id,
                            created_at,
                            author_id,
                            channel_id,
                            thread_id,
                            content,
                            False,
                            tsvector(content),
                        )
                    )
                    count += 1
        return count

    async def analyze(self) -> None:
        """Refresh the planner's statistics (after a bulk load)."""
        async with self._pool.connection() as conn:
            await conn.execute("ANALYZE")

    async def close(self) -> None:
        """Close the pool (waits for connections in use)."""
        await self._pool.close()
