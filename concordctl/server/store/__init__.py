"""Storage of the embedded server: one data API, two backends.

``store = await open_store(db)`` picks the backend from ``db``: a path or
``:memory:`` is SQLite (the embedded default, nothing to install), a
``postgresql://`` URL is PostgreSQL. Both apply the versioned migrations of
their module at start and refuse a database made by a newer release.

* ``data.py``: :class:`Store`, every query of the server, once;
* ``backend.py``: what a backend provides (off-loop reads, serialized
  writes, migrations);
* ``sqlite.py`` / ``postgres.py``: the backends and their schemas;
* ``search.py``: what a search query means, identically on both;
* ``records.py``: users and search filters; ``seed.py``: a fresh server.
"""

from __future__ import annotations

from concordctl.ids import MAX_ID
from concordctl.server.store.backend import Backend, Conflict, SchemaTooNew, StoreError
from concordctl.server.store.data import Store
from concordctl.server.store.records import SearchFilter, StoredUser, username_key

__all__ = [
    "MAX_ID",
    "Backend",
    "Conflict",
    "SchemaTooNew",
    "SearchFilter",
    "Store",
    "StoreError",
    "StoredUser",
    "is_postgres_url",
    "open_store",
    "username_key",
]


def is_postgres_url(db: str) -> bool:
    """True when ``db`` names a PostgreSQL database rather than a SQLite file."""
    return db.startswith(("postgresql://", "postgres://"))


async def open_store(db: str) -> Store:
    """Open (creating and migrating as needed) the database ``db``.

    Raises :class:`StoreError` with a one-line reason when it cannot be used
    (unreachable server, unwritable file, schema too new).
    """
    if is_postgres_url(db):
        from concordctl.server.store.postgres import PostgresBackend

        backend: Backend = await PostgresBackend.open(db)
    else:
        from concordctl.server.store.sqlite import SqliteBackend

        backend = await SqliteBackend.open(db)
    return await Store.on(backend)
