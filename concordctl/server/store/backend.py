"""What a storage backend gives the store: off-loop reads, serialized writes, migrations.

:class:`~concordctl.server.store.data.Store` holds every query of the server
once, written in the SQL both SQLite and PostgreSQL speak (``?`` placeholders;
the PostgreSQL backend rewrites them). A backend runs those statements
without ever blocking the event loop, and supplies the few things that differ
between the two databases (full-text search, bulk loading, the schema).

Writes go through :meth:`Backend.write`: one transaction at a time per
process, so chats are committed in the order their events are broadcast.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from concordctl.server.store.search import SearchTerms

__all__ = [
    "Backend",
    "Conflict",
    "Migration",
    "Row",
    "SchemaTooNew",
    "StoreError",
    "Transaction",
]

Row = tuple[Any, ...]


class StoreError(Exception):
    """The database cannot be opened or used; the message says what to do."""


class SchemaTooNew(StoreError):
    """The database was made by a newer concordctl than this one."""


class Conflict(StoreError):
    """A unique constraint refused a row (a taken username)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: its statements run in one transaction, then the
    version is recorded in ``schema_version``. Never edit a released one: add
    the next."""

    version: int
    why: str
    statements: tuple[str, ...]


class Transaction(ABC):
    """Statements inside one write transaction (see :meth:`Backend.write`)."""

    @abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed. A unique
        violation raises :class:`Conflict` (the transaction is then rolled back
        when the block exits)."""

    @abstractmethod
    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows of a query, seeing this transaction's own changes."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each parameter row."""


class Backend(ABC):
    """A database the store runs on. Create with the backend's own ``open``."""

    #: "sqlite" or "postgresql", for messages and tests.
    name: str
    #: The column of ``reactions`` that orders them as they were added.
    reaction_order: str
    #: True when the store must write ``chats.words`` itself (PostgreSQL's
    #: tsvector); SQLite's triggers index the words.
    stores_words: bool

    @abstractmethod
    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows of a read-only query, run off the event loop; several may run at once."""

    @abstractmethod
    def write(self) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """``async with backend.write() as tx:`` one transaction, committed when
        the block ends, rolled back if it raises. One at a time in a process."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement in a transaction of its own."""
        async with self.write() as tx:
            return await tx.execute(sql, params)

    @abstractmethod
    def fts_condition(self, terms: SearchTerms) -> tuple[str, Any]:
        """A WHERE condition on ``chats`` matching the terms, and its one parameter."""

    @abstractmethod
    async def bulk_insert_chats(self, rows: Iterable[Sequence[Any]]) -> int:
        """Insert ``(id, created_at, author_id, channel_id, thread_id, content)``
        rows as fast as the database allows (seeding benchmarks and tests)."""

    @abstractmethod
    async def close(self) -> None:
        """Wait for running statements, then close every connection."""

    async def migrate(self, migrations: Sequence[Migration], where: str) -> int:
        """Bring the schema to the newest of ``migrations``; the version now.

        Raises :class:`SchemaTooNew` for a database a newer release made:
        this one must not write to a schema it does not know.
        """
        newest = migrations[-1].version
        async with self.write() as tx:
            await self._lock_schema(tx)
            await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            rows = await tx.fetch("SELECT max(version) FROM schema_version")
            current = int(rows[0][0] or 0)
            if current > newest:
                raise SchemaTooNew(
                    f"the database {where} has schema version {current}, newer than this "
                    f"concordctl knows ({newest}): upgrade concordctl, or use another --db"
                )
            for migration in migrations:
                if migration.version > current:
                    for statement in migration.statements:
                        await tx.execute(statement)
                    await tx.execute(
                        "INSERT INTO schema_version (version) VALUES (?)", (migration.version,)
                    )
        return max(current, newest)

    async def _lock_schema(self, tx: Transaction) -> None:  # noqa: B027 (optional hook)
        """Keep other processes from migrating at the same time (PostgreSQL nodes)."""

    async def schema_version(self) -> int:
        """The version recorded in the database (0 before any migration)."""
        rows = await self.fetch("SELECT max(version) FROM schema_version")
        return int(rows[0][0] or 0)
