"""A bot's state: namespaced JSON values that survive restarts.

::

    bot = Bot(prefix="!", state="modbot.db")    # or ":memory:" (the default), or postgresql://...
    strikes = bot.store("strikes")
    n = await strikes.update(str(user_id), lambda v: (v or 0) + 1)

The promises:

* **Values are JSON** (``None``, bools, numbers, strings, lists, dicts with
  string keys): what ``get`` returns is a fresh decoded copy, so mutating it
  changes nothing until it is ``set`` again. Keys are strings (an ``int`` key
  is turned into its decimal string).
* **Durable when the call returns**: SQLite commits in WAL mode with
  ``synchronous=FULL``; PostgreSQL commits with its default synchronous commit.
* **``update`` is atomic**: a read-modify-write under a lock on the row (SQLite:
  ``BEGIN IMMEDIATE``, which also holds against other processes on the same
  file; PostgreSQL: ``SELECT ... FOR UPDATE``, or an insert that loses a race is
  retried). ``fn`` may be called more than once when two first writes of a key
  race on PostgreSQL, so keep it a pure function of the old value; it may be
  ``async``.

Backends: SQLite through the standard library's :mod:`sqlite3` on one worker
thread (the event loop never blocks on disk), and PostgreSQL through psycopg 3's
async driver and pool (imported only when a ``postgresql://`` URL is used).
The same backend also keeps the bot's own bookkeeping (its stream cursor and,
in :mod:`concordctl.bot.claims`, which replica handles what), in tables and
namespaces of its own (``concordctl.*``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from concordctl.errors import ConcordError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

__all__ = [
    "PostgresState",
    "SqliteState",
    "StateBackend",
    "StateError",
    "Store",
    "open_state",
]

T = TypeVar("T")

#: Namespaces starting with this are the bot's own (cursor, claims).
INTERNAL_PREFIX = "concordctl."
_MISSING: Any = object()


class StateError(ConcordError):
    """The state store could not be opened or used (bad path, unreachable database)."""


def _encode(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"store values must be JSON (got {type(value).__name__}): {exc}") from None


def _key(key: str | int) -> str:
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise TypeError(f"store keys are strings (got {type(key).__name__})")
    return str(key)


def _is_postgres(spec: str) -> bool:
    return spec.startswith(("postgresql://", "postgres://"))


def describe_state(spec: str | None) -> str:
    """The state location for logs, without a password."""
    if spec is None:
        return ":memory:"
    if _is_postgres(spec):
        from concordctl.errors import redact_url

        scheme, _, rest = spec.partition("://")
        userinfo, at, host = rest.rpartition("@")
        if at and ":" in userinfo:
            spec = f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"
        return redact_url(spec)
    return spec


class StateBackend:
    """Where a bot's state lives. Values are passed as JSON text."""

    kind = "?"
    #: True when several processes may share this state as replicas.
    shared = False

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def get(self, ns: str, key: str) -> str | None:
        raise NotImplementedError

    async def set(self, ns: str, key: str, text: str) -> None:
        raise NotImplementedError

    async def delete(self, ns: str, key: str) -> bool:
        raise NotImplementedError

    async def update(self, ns: str, key: str, fn: Callable[[Any], Any]) -> Any:
        raise NotImplementedError

    async def items(self, ns: str) -> list[tuple[str, str]]:
        raise NotImplementedError


async def _apply(fn: Callable[[Any], Any], old: Any) -> Any:
    new = fn(old)
    if inspect.isawaitable(new):
        new = await new
    return new


# --------------------------------------------------------------------------
# SQLite
# --------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS concordctl_state (
    ns TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (ns, key)
) WITHOUT ROWID
"""


#: How long a SQLite call waits for another connection's lock (busy timeout and set-up retries).
_SQLITE_PATIENCE = 30.0


def _prepare(conn: sqlite3.Connection, *, wal: bool) -> None:
    """Switch a new connection to WAL and create the table, however many open at once.

    Two connections opening a new file together can be refused with "database
    is locked" without SQLite's busy handler ever running: changing the journal
    mode, and a schema read that must become a write, are the cases where
    SQLite answers at once rather than risk a deadlock. Both are safe to repeat,
    so they are retried (in the store's worker thread) for up to
    ``_SQLITE_PATIENCE`` seconds, as the busy timeout would have waited.
    """
    deadline = time.monotonic() + _SQLITE_PATIENCE
    while True:
        try:
            if wal:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_SQLITE_SCHEMA)
            conn.execute("COMMIT")
            return
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


class SqliteState(StateBackend):
    """A SQLite file (or ``:memory:``), used from one worker thread.

    One connection in autocommit mode: every write is its own committed
    transaction unless ``update`` opens one with ``BEGIN IMMEDIATE``. An
    ``asyncio.Lock`` keeps this process's calls from interleaving inside that
    transaction; the file lock keeps other processes out.
    """

    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        # One thread: sqlite3 connections belong to the thread that uses them,
        # and one thread also orders the calls.
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the store's thread, between other calls (claims.py)."""
        async with self._lock:
            return await self._call(fn)

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None or self._conn is None:
            raise StateError("the state store is closed")
        conn = self._conn
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, conn)

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="concordctl-state")

        def connect() -> sqlite3.Connection:
            if self.path != ":memory:":
                parent = Path(self.path).expanduser().parent
                if not parent.is_dir():
                    raise sqlite3.OperationalError(f"no directory {parent}")
            conn = sqlite3.connect(
                str(Path(self.path).expanduser()) if self.path != ":memory:" else self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=_SQLITE_PATIENCE,
            )
            try:
                _prepare(conn, wal=self.path != ":memory:")
            except BaseException:
                conn.close()
                raise
            return conn

        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._executor, connect)
        except sqlite3.Error as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise StateError(
                f"cannot open the state file {self.path}: {exc}",
                hint="check the path and its permissions",
            ) from None

    async def close(self) -> None:
        executor, conn = self._executor, self._conn
        if executor is None:
            return
        async with self._lock:
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(executor, conn.close)
            self._executor = None
            self._conn = None
        executor.shutdown(wait=True)

    async def get(self, ns: str, key: str) -> str | None:
        def run(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT value FROM concordctl_state WHERE ns = ? AND key = ?", (ns, key)
            ).fetchone()
            return None if row is None else str(row[0])

        async with self._lock:
            return await self._call(run)

    async def set(self, ns: str, key: str, text: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO concordctl_state (ns, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
                (ns, key, text),
            )

        async with self._lock:
            await self._call(run)

    async def delete(self, ns: str, key: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM concordctl_state WHERE ns = ? AND key = ?", (ns, key))
            return cur.rowcount > 0

        async with self._lock:
            return await self._call(run)

    async def update(self, ns: str, key: str, fn: Callable[[Any], Any]) -> Any:
        def begin(conn: sqlite3.Connection) -> str | None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT value FROM concordctl_state WHERE ns = ? AND key = ?", (ns, key)
                ).fetchone()
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return None if row is None else str(row[0])

        def commit(conn: sqlite3.Connection, text: str) -> None:
            try:
                conn.execute(
                    "INSERT INTO concordctl_state (ns, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
                    (ns, key, text),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        def rollback(conn: sqlite3.Connection) -> None:
            conn.execute("ROLLBACK")

        async with self._lock:
            old = await self._call(begin)
            try:
                new = await _apply(fn, None if old is None else json.loads(old))
                text = _encode(new)
            except BaseException:
                await asyncio.shield(self._call(rollback))
                raise
            await asyncio.shield(self._call(lambda conn: commit(conn, text)))
            return json.loads(text)

    async def items(self, ns: str) -> list[tuple[str, str]]:
        def run(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = conn.execute(
                "SELECT key, value FROM concordctl_state WHERE ns = ? ORDER BY key", (ns,)
            ).fetchall()
            return [(str(k), str(v)) for k, v in rows]

        async with self._lock:
            return await self._call(run)


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------

_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS concordctl_state (
    ns text NOT NULL, key text NOT NULL, value text NOT NULL, PRIMARY KEY (ns, key)
)
"""
#: Serialises schema creation between replicas starting at once (CREATE TABLE
#: IF NOT EXISTS is not safe against itself in PostgreSQL).
SCHEMA_LOCK = 0x636F6E63  # "conc"


class PostgresState(StateBackend):
    """A PostgreSQL database through psycopg 3's async pool; shared by replicas."""

    kind = "postgresql"
    shared = True

    def __init__(self, url: str, *, max_size: int = 8) -> None:
        self.url = url
        self.max_size = max_size
        self.pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        #: Extra DDL run once at open (claims.py adds its tables).
        self.schema: list[str] = [_PG_SCHEMA]

    async def open(self) -> None:
        if self.pool is not None:
            return
        try:
            import psycopg
            from psycopg_pool import AsyncConnectionPool
        except ImportError as exc:  # pragma: no cover - a dependency
            raise StateError(
                "a postgresql:// state needs psycopg 3", hint="pip install 'psycopg[binary]'"
            ) from exc
        pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            self.url, min_size=1, max_size=self.max_size, open=False, timeout=30.0
        )
        try:
            # One plain connection first: a wrong URL fails at once, not after
            # the pool has retried for its whole timeout.
            first = await psycopg.AsyncConnection.connect(self.url, connect_timeout=10)
            await first.close()
            await pool.open(wait=True, timeout=15.0)
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                for ddl in self.schema:
                    await conn.execute(ddl)
        except Exception as exc:
            await pool.close()
            raise StateError(
                f"cannot open the PostgreSQL state {describe_state(self.url)}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(),
                hint="check that the server runs and the URL is right",
            ) from None
        self.pool = pool

    def _pool(self) -> AsyncConnectionPool[AsyncConnection[Any]]:
        if self.pool is None:
            raise StateError("the state store is closed")
        return self.pool

    async def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.close()

    async def get(self, ns: str, key: str) -> str | None:
        async with self._pool().connection() as conn:
            cur = await conn.execute(
                "SELECT value FROM concordctl_state WHERE ns = %s AND key = %s", (ns, key)
            )
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def set(self, ns: str, key: str, text: str) -> None:
        async with self._pool().connection() as conn:
            await conn.execute(
                "INSERT INTO concordctl_state (ns, key, value) VALUES (%s, %s, %s) "
                "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
                (ns, key, text),
            )

    async def delete(self, ns: str, key: str) -> bool:
        async with self._pool().connection() as conn:
            cur = await conn.execute(
                "DELETE FROM concordctl_state WHERE ns = %s AND key = %s", (ns, key)
            )
            return cur.rowcount > 0

    async def update(self, ns: str, key: str, fn: Callable[[Any], Any]) -> Any:
        while True:
            async with self._pool().connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT value FROM concordctl_state WHERE ns = %s AND key = %s FOR UPDATE",
                    (ns, key),
                )
                row = await cur.fetchone()
                old = None if row is None else json.loads(row[0])
                text = _encode(await _apply(fn, old))
                if row is not None:
                    await conn.execute(
                        "UPDATE concordctl_state SET value = %s WHERE ns = %s AND key = %s",
                        (text, ns, key),
                    )
                    return json.loads(text)
                cur = await conn.execute(
                    "INSERT INTO concordctl_state (ns, key, value) VALUES (%s, %s, %s) "
                    "ON CONFLICT (ns, key) DO NOTHING",
                    (ns, key, text),
                )
                if cur.rowcount == 1:
                    return json.loads(text)
            # Another writer created the key first: read its value and go again.

    async def items(self, ns: str) -> list[tuple[str, str]]:
        async with self._pool().connection() as conn:
            cur = await conn.execute(
                "SELECT key, value FROM concordctl_state WHERE ns = %s ORDER BY key", (ns,)
            )
            rows = await cur.fetchall()
        return [(str(k), str(v)) for k, v in rows]


def open_state(spec: str | None) -> StateBackend:
    """The backend for a ``state=`` setting (not opened yet: ``await .open()``).

    ``None`` or ``":memory:"``: SQLite in memory (gone when the bot stops); a
    ``postgresql://`` URL: PostgreSQL; anything else: a SQLite file path.
    """
    if spec is None or spec == ":memory:":
        return SqliteState(":memory:")
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError("state= must be a file path, ':memory:' or a postgresql:// URL")
    if _is_postgres(spec):
        return PostgresState(spec)
    if "://" in spec:
        raise UsageError(
            f"unsupported state URL {describe_state(spec)}",
            hint="give a SQLite file path, ':memory:' or a postgresql:// URL",
        )
    return SqliteState(spec)


class StateHandle:
    """A backend opened on first use and closed by its owner (the bot)."""

    def __init__(self, spec: str | None) -> None:
        self.spec = spec
        self.backend = open_state(spec)
        self._opened = False
        self._opening: asyncio.Lock | None = None

    async def ready(self) -> StateBackend:
        if not self._opened:
            if self._opening is None:
                self._opening = asyncio.Lock()
            async with self._opening:
                if not self._opened:
                    await self.backend.open()
                    self._opened = True
        return self.backend

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            await self.backend.close()
            # A later serve() opens it again; a fresh backend for a fresh loop.
            self.backend = open_state(self.spec)
            self._opening = None


class Store:
    """One namespace of a bot's state: ``bot.store("strikes")``.

    Usable from handlers and hooks once the bot runs (the backend opens on
    first use), or standalone with a :class:`StateHandle`.
    """

    __slots__ = ("_handle", "namespace")

    def __init__(self, handle: StateHandle | Callable[[], StateHandle], namespace: str) -> None:
        if not isinstance(namespace, str) or not namespace:
            raise UsageError("a store namespace is a non-empty string")
        self._handle = handle
        self.namespace = namespace

    async def _backend(self) -> StateBackend:
        handle = self._handle
        if not isinstance(handle, StateHandle):
            handle = handle()
        return await handle.ready()

    async def get(self, key: str | int, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` when there is none."""
        text = await (await self._backend()).get(self.namespace, _key(key))
        return default if text is None else json.loads(text)

    async def set(self, key: str | int, value: Any) -> None:
        """Store ``value`` (JSON) under ``key``; durable when this returns."""
        text = _encode(value)
        await (await self._backend()).set(self.namespace, _key(key), text)

    async def delete(self, key: str | int) -> bool:
        """Remove ``key``; True when it existed."""
        return await (await self._backend()).delete(self.namespace, _key(key))

    async def update(
        self, key: str | int, fn: Callable[[Any], Any] | Callable[[Any], Awaitable[Any]]
    ) -> Any:
        """Atomically replace the value with ``fn(old)`` (``old`` is None when
        missing) and return the new value."""
        return await (await self._backend()).update(self.namespace, _key(key), fn)

    async def items(self) -> AsyncIterator[tuple[str, Any]]:
        """Every ``(key, value)`` of the namespace, by key (a snapshot)."""
        rows = await (await self._backend()).items(self.namespace)
        for key, text in rows:
            yield key, json.loads(text)

    def __repr__(self) -> str:
        handle = self._handle if isinstance(self._handle, StateHandle) else self._handle()
        return f"Store({self.namespace!r}, {describe_state(handle.spec)})"
