"""Claims, leases and the cursor: one bot in several processes, and across restarts.

With ``Bot(state=...)`` on a file or a PostgreSQL database, every handler call
is *claimed* in the state before it runs, and the stream cursor is kept there
too. That one mechanism gives both promises of issue 10:

* **Restart recovery.** The cursor saved is the newest chat id below which
  every chat the bot received has been claimed (or needed no handler). A bot
  started again opens its stream ``since=`` that cursor, so the stream
  recovers every chat sent while it was down; the claims of chats it had
  handled already stop them from being handled twice, and the claims it had
  taken but not finished (it was killed mid-handler) are run again.
* **Replicas.** Several processes on one PostgreSQL state all read the stream;
  the first to ``INSERT ... ON CONFLICT DO NOTHING`` the row (handler, event
  key) runs that handler on that event, the others skip it. A replica keeps a
  row in ``concordctl_replicas`` alive (a heartbeat every ``lease / 3``
  seconds); when it stops beating for ``lease`` seconds, another replica takes
  over its unfinished claims (an ``UPDATE ... WHERE owner = dead`` that only
  one wins) and runs them from the event stored with the claim. Periodic and
  scheduled jobs run on the replica that holds their lease row; a dead
  holder's leases pass to the next replica that asks.

Delivery is at-least-once per handler (a handler cut off by SIGKILL runs
again) and exactly-once for what the handler sends through ``ctx.reply`` /
``bot.client.send_chat``: each send of a claimed call is numbered and
recorded with the chat it made, so the re-run gets the recorded chat back
instead of sending again. The one window left, a kill between the server
accepting a chat and the record being written, is closed on re-runs by
looking for that chat (same channel, same content, by the bot, newer than the
event) in the channel's latest chats before sending.

On SQLite the state belongs to one process at a time: a bot starting on a file
treats every other owner recorded there as dead (the previous run).

Event keys: ``chat:<id>`` for chats (live and recovered alike, so a recovered
chat is known by its id), otherwise the type and a digest of the event as
received (every replica receives the same bytes for one broadcast).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import os
import secrets
import socket
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from concordctl.bot.store import (
    INTERNAL_PREFIX,
    PostgresState,
    SqliteState,
    StateBackend,
    StateHandle,
)
from concordctl.protocol import Chat, ChatSent, Event, decode, decode_event, encode, encode_event

__all__ = ["Claim", "ClaimBook", "Coordinator", "CursorTracker", "current_claim", "event_key"]

log = logging.getLogger("concordctl.bot")

CURSOR_NS = INTERNAL_PREFIX + "cursor"
#: How long done claims are kept (a restart after longer than this relies on the cursor alone).
KEEP_DONE_SECONDS = 24 * 3600.0


def event_key(ev: Event) -> str:
    if isinstance(ev, ChatSent):
        return f"chat:{ev.chat.id}"
    digest = hashlib.blake2b(encode_event(ev), digest_size=12).hexdigest()
    return f"{ev.type}:{digest}"


@dataclass(eq=False)
class Claim:
    """One handler call this process owns: recorded replies and the send counter."""

    handler: str
    key: str
    attempt: int
    event: Event | None = None
    replies: dict[int, Chat] = field(default_factory=dict)
    next_seq: int = 0
    after_id: int = 0  # the event's chat id: a reply to it is newer


#: The claim of the handler call running in this task (replies are numbered under it).
current_claim: contextvars.ContextVar[Claim | None] = contextvars.ContextVar(
    "concordctl_claim", default=None
)


class ClaimBook:
    """The claim tables of one backend (SQL in two dialects, one set of verbs)."""

    async def setup(self, owner: str, lease: float) -> None:
        raise NotImplementedError

    async def heartbeat(self, owner: str, lease: float) -> None:
        raise NotImplementedError

    async def acquire(self, handler: str, key: str, owner: str, event: bytes) -> Claim | None:
        raise NotImplementedError

    async def finish(self, claim: Claim) -> None:
        raise NotImplementedError

    async def record_reply(self, claim: Claim, seq: int, chat: Chat) -> None:
        raise NotImplementedError

    async def is_recorded(self, chat_id: int) -> bool:
        """Whether a chat is recorded as the reply of some claim."""
        raise NotImplementedError

    async def orphans(self, owner: str, limit: int = 100) -> list[tuple[str, str, str]]:
        """(handler, key, dead owner) of unfinished claims whose owner is dead."""
        raise NotImplementedError

    async def take_over(self, handler: str, key: str, dead: str, owner: str) -> Claim | None:
        raise NotImplementedError

    async def hold_lease(self, name: str, owner: str) -> bool:
        raise NotImplementedError

    async def retire(self, owner: str) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------
# SQLite: one process at a time
# --------------------------------------------------------------------------

_SQLITE_TABLES = (
    """CREATE TABLE IF NOT EXISTS concordctl_claims (
        handler TEXT NOT NULL, event_key TEXT NOT NULL, owner TEXT NOT NULL,
        status TEXT NOT NULL, attempt INTEGER NOT NULL, event BLOB NOT NULL,
        updated REAL NOT NULL, PRIMARY KEY (handler, event_key))""",
    """CREATE TABLE IF NOT EXISTS concordctl_replies (
        handler TEXT NOT NULL, event_key TEXT NOT NULL, seq INTEGER NOT NULL,
        chat_id INTEGER NOT NULL, chat BLOB NOT NULL, PRIMARY KEY (handler, event_key, seq))""",
    "CREATE INDEX IF NOT EXISTS concordctl_replies_chat ON concordctl_replies (chat_id)",
    """CREATE TABLE IF NOT EXISTS concordctl_replicas (
        owner TEXT PRIMARY KEY, alive_until REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS concordctl_leases (
        name TEXT PRIMARY KEY, owner TEXT NOT NULL)""",
)


class SqliteClaims(ClaimBook):
    def __init__(self, backend: SqliteState) -> None:
        self.db = backend

    async def setup(self, owner: str, lease: float) -> None:
        def run(conn: sqlite3.Connection) -> None:
            for ddl in _SQLITE_TABLES:
                conn.execute(ddl)
            conn.execute("BEGIN IMMEDIATE")
            # One process per file: whoever was here before is gone.
            conn.execute("DELETE FROM concordctl_replicas")
            conn.execute(
                "INSERT INTO concordctl_replicas (owner, alive_until) VALUES (?, ?)",
                (owner, 1e18),
            )
            conn.execute("DELETE FROM concordctl_leases")
            conn.execute(
                "DELETE FROM concordctl_replies WHERE (handler, event_key) IN "
                "(SELECT handler, event_key FROM concordctl_claims "
                " WHERE status = 'done' AND updated < ?)",
                (time.time() - KEEP_DONE_SECONDS,),
            )
            conn.execute(
                "DELETE FROM concordctl_claims WHERE status = 'done' AND updated < ?",
                (time.time() - KEEP_DONE_SECONDS,),
            )
            conn.execute("COMMIT")

        await self.db.call(run)

    async def heartbeat(self, owner: str, lease: float) -> None:
        return None  # nobody else to tell

    async def acquire(self, handler: str, key: str, owner: str, event: bytes) -> Claim | None:
        def run(conn: sqlite3.Connection) -> Claim | None:
            cur = conn.execute(
                "INSERT INTO concordctl_claims "
                "(handler, event_key, owner, status, attempt, event, updated) "
                "VALUES (?, ?, ?, 'running', 1, ?, ?) ON CONFLICT DO NOTHING",
                (handler, key, owner, event, time.time()),
            )
            if cur.rowcount == 1:
                return Claim(handler, key, 1)
            return None  # done, or being re-run from orphans()

        return await self.db.call(run)

    async def finish(self, claim: Claim) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE concordctl_claims SET status = 'done', updated = ? "
                "WHERE handler = ? AND event_key = ?",
                (time.time(), claim.handler, claim.key),
            )

        await self.db.call(run)

    async def record_reply(self, claim: Claim, seq: int, chat: Chat) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO concordctl_replies "
                "(handler, event_key, seq, chat_id, chat) VALUES (?, ?, ?, ?, ?)",
                (claim.handler, claim.key, seq, chat.id, encode(chat)),
            )

        await self.db.call(run)

    async def is_recorded(self, chat_id: int) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM concordctl_replies WHERE chat_id = ? LIMIT 1", (chat_id,)
            ).fetchone()
            return row is not None

        return await self.db.call(run)

    async def orphans(self, owner: str, limit: int = 100) -> list[tuple[str, str, str]]:
        def run(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
            rows = conn.execute(
                "SELECT handler, event_key, owner FROM concordctl_claims "
                "WHERE status = 'running' AND owner != ? ORDER BY rowid LIMIT ?",
                (owner, limit),
            ).fetchall()
            return [(str(h), str(k), str(o)) for h, k, o in rows]

        return await self.db.call(run)

    async def take_over(self, handler: str, key: str, dead: str, owner: str) -> Claim | None:
        def run(conn: sqlite3.Connection) -> Claim | None:
            cur = conn.execute(
                "UPDATE concordctl_claims SET owner = ?, attempt = attempt + 1, updated = ? "
                "WHERE handler = ? AND event_key = ? AND owner = ? AND status = 'running' "
                "RETURNING attempt, event",
                (owner, time.time(), handler, key, dead),
            )
            row = cur.fetchone()
            if row is None:
                return None
            replies = conn.execute(
                "SELECT seq, chat FROM concordctl_replies WHERE handler = ? AND event_key = ?",
                (handler, key),
            ).fetchall()
            return _revived(handler, key, int(row[0]), bytes(row[1]), replies)

        return await self.db.call(run)

    async def hold_lease(self, name: str, owner: str) -> bool:
        return True  # the only process

    async def retire(self, owner: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM concordctl_replicas WHERE owner = ?", (owner,))

        await self.db.call(run)


def _revived(
    handler: str, key: str, attempt: int, event: bytes, replies: list[Any]
) -> Claim | None:
    try:
        ev = decode_event(event)
    except ValueError as exc:
        log.error("claim %s/%s: its stored event cannot be decoded (%s)", handler, key, exc)
        return None
    if isinstance(ev, ChatSent):
        ev = ChatSent(chat=ev.chat, recovered=True)
    claim = Claim(handler, key, attempt, ev)
    if isinstance(ev, ChatSent):
        claim.after_id = ev.chat.id
    for seq, chat in replies:
        claim.replies[int(seq)] = decode(bytes(chat), Chat)
    return claim


# --------------------------------------------------------------------------
# PostgreSQL: replicas
# --------------------------------------------------------------------------

_PG_TABLES = (
    """CREATE TABLE IF NOT EXISTS concordctl_claims (
        handler text NOT NULL, event_key text NOT NULL, owner text NOT NULL,
        status text NOT NULL, attempt integer NOT NULL, event bytea NOT NULL,
        updated timestamptz NOT NULL DEFAULT now(), seq bigserial,
        PRIMARY KEY (handler, event_key))""",
    """CREATE INDEX IF NOT EXISTS concordctl_claims_running
        ON concordctl_claims (owner) WHERE status = 'running'""",
    """CREATE TABLE IF NOT EXISTS concordctl_replies (
        handler text NOT NULL, event_key text NOT NULL, seq integer NOT NULL,
        chat_id bigint NOT NULL, chat bytea NOT NULL, PRIMARY KEY (handler, event_key, seq))""",
    "CREATE INDEX IF NOT EXISTS concordctl_replies_chat ON concordctl_replies (chat_id)",
    """CREATE TABLE IF NOT EXISTS concordctl_replicas (
        owner text PRIMARY KEY, alive_until timestamptz NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS concordctl_leases (
        name text PRIMARY KEY, owner text NOT NULL)""",
)
_ALIVE = (
    "EXISTS (SELECT 1 FROM concordctl_replicas r WHERE r.owner = {col} AND r.alive_until > now())"
)


class PostgresClaims(ClaimBook):
    def __init__(self, backend: PostgresState) -> None:
        self.db = backend
        for ddl in _PG_TABLES:
            if ddl not in backend.schema:
                backend.schema.append(ddl)

    async def _exec(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        async with self.db._pool().connection() as conn:
            cur = await conn.execute(sql, params)
            return list(await cur.fetchall()) if cur.description else []

    async def setup(self, owner: str, lease: float) -> None:
        await self.heartbeat(owner, lease)
        await self._exec(
            "WITH old AS (DELETE FROM concordctl_claims WHERE status = 'done' "
            "AND updated < now() - make_interval(secs => %s) RETURNING handler, event_key) "
            "DELETE FROM concordctl_replies r USING old "
            "WHERE r.handler = old.handler AND r.event_key = old.event_key",
            (KEEP_DONE_SECONDS,),
        )
        await self._exec(
            "DELETE FROM concordctl_replicas WHERE alive_until < now() - interval '1 hour'", ()
        )

    async def heartbeat(self, owner: str, lease: float) -> None:
        await self._exec(
            "INSERT INTO concordctl_replicas (owner, alive_until) "
            "VALUES (%s, now() + make_interval(secs => %s)) "
            "ON CONFLICT (owner) DO UPDATE SET alive_until = excluded.alive_until",
            (owner, lease),
        )

    async def acquire(self, handler: str, key: str, owner: str, event: bytes) -> Claim | None:
        rows = await self._exec(
            "INSERT INTO concordctl_claims (handler, event_key, owner, status, attempt, event) "
            "VALUES (%s, %s, %s, 'running', 1, %s) ON CONFLICT DO NOTHING RETURNING attempt",
            (handler, key, owner, event),
        )
        return Claim(handler, key, 1) if rows else None

    async def finish(self, claim: Claim) -> None:
        await self._exec(
            "UPDATE concordctl_claims SET status = 'done', updated = now() "
            "WHERE handler = %s AND event_key = %s",
            (claim.handler, claim.key),
        )

    async def record_reply(self, claim: Claim, seq: int, chat: Chat) -> None:
        await self._exec(
            "INSERT INTO concordctl_replies (handler, event_key, seq, chat_id, chat) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (handler, event_key, seq) "
            "DO UPDATE SET chat = excluded.chat, chat_id = excluded.chat_id",
            (claim.handler, claim.key, seq, chat.id, encode(chat)),
        )

    async def is_recorded(self, chat_id: int) -> bool:
        rows = await self._exec(
            "SELECT 1 FROM concordctl_replies WHERE chat_id = %s LIMIT 1", (chat_id,)
        )
        return bool(rows)

    async def orphans(self, owner: str, limit: int = 100) -> list[tuple[str, str, str]]:
        rows = await self._exec(
            "SELECT handler, event_key, owner FROM concordctl_claims c "
            "WHERE status = 'running' AND owner != %s AND NOT "
            + _ALIVE.format(col="c.owner")
            + " ORDER BY seq LIMIT %s",
            (owner, limit),
        )
        return [(str(h), str(k), str(o)) for h, k, o in rows]

    async def take_over(self, handler: str, key: str, dead: str, owner: str) -> Claim | None:
        async with self.db._pool().connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE concordctl_claims SET owner = %s, attempt = attempt + 1, updated = now() "
                "WHERE handler = %s AND event_key = %s AND owner = %s AND status = 'running' "
                "RETURNING attempt, event",
                (owner, handler, key, dead),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            cur = await conn.execute(
                "SELECT seq, chat FROM concordctl_replies WHERE handler = %s AND event_key = %s",
                (handler, key),
            )
            replies = list(await cur.fetchall())
        return _revived(handler, key, int(row[0]), bytes(row[1]), replies)

    async def hold_lease(self, name: str, owner: str) -> bool:
        rows = await self._exec(
            "INSERT INTO concordctl_leases AS l (name, owner) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner "
            "WHERE l.owner = excluded.owner OR NOT " + _ALIVE.format(col="l.owner") + " "
            "RETURNING owner",
            (name, owner),
        )
        return bool(rows)

    async def retire(self, owner: str) -> None:
        # Claims still running (cut off by the grace period) pass to the others now.
        await self._exec("DELETE FROM concordctl_replicas WHERE owner = %s", (owner,))


def claim_book(backend: StateBackend) -> ClaimBook:
    if isinstance(backend, PostgresState):
        return PostgresClaims(backend)
    if isinstance(backend, SqliteState):
        return SqliteClaims(backend)
    raise TypeError(f"no claims for {type(backend).__name__}")  # pragma: no cover


# --------------------------------------------------------------------------
# The cursor
# --------------------------------------------------------------------------


class CursorTracker:
    """The newest chat id below which every chat received is claimed or needed no handler.

    ``received(id, calls)`` when a chat is dispatched to ``calls`` handler
    calls; ``settled(id)`` once per call when its claim is decided (won, lost,
    or the call skipped). Ids are dispatched in stream order, so a deque does.
    """

    def __init__(self, start: int = 0) -> None:
        self.safe = start
        self._open: deque[list[int]] = deque()  # [chat id, calls not yet settled]
        self._by_id: dict[int, list[int]] = {}

    def received(self, chat_id: int, calls: int) -> None:
        if calls <= 0 and not self._open:
            self.safe = max(self.safe, chat_id)
            return
        entry = self._by_id.get(chat_id)
        if entry is not None:  # the same chat again (a re-run)
            entry[1] += max(calls, 0)
            return
        entry = [chat_id, max(calls, 0)]
        self._open.append(entry)
        if calls > 0:
            self._by_id[chat_id] = entry
        self._advance()

    def settled(self, chat_id: int) -> None:
        entry = self._by_id.get(chat_id)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self._by_id[chat_id]
            self._advance()

    def _advance(self) -> None:
        while self._open and self._open[0][1] <= 0:
            self.safe = max(self.safe, self._open.popleft()[0])

    @property
    def pending(self) -> int:
        return len(self._by_id)


# --------------------------------------------------------------------------
# What the runtime talks to
# --------------------------------------------------------------------------

#: Re-runs a taken-over claim (the runtime dispatches its event to that handler only).
Redispatch = Callable[[Claim], None]
#: The bot's chats with this content newer than a chat id, oldest first:
#: (channel, content, after chat id) -> chats.
Probe = Callable[[int | str, str, int], Awaitable[list[Chat]]]


class Coordinator:
    """Claims, leases, heartbeat and cursor of one bot run on a durable state.

    The runtime calls :meth:`open` before reading the stream (it gets the
    saved cursor), :meth:`acquire` / :meth:`finish` around each handler call,
    :meth:`send_once` for each chat a claimed call sends, :meth:`may_run`
    before each job run, and :meth:`close` at the end.
    """

    def __init__(self, handle: StateHandle, *, lease: float = 6.0) -> None:
        self.handle = handle
        self.lease = lease
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.book: ClaimBook | None = None
        self.cursor = CursorTracker()
        self._saved_cursor = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.redispatch: Redispatch | None = None
        self.probe: Probe | None = None
        self.shared = False
        self.taken_over = 0

    async def open(self) -> int:
        """Open the state, register this replica; the saved cursor (0: none)."""
        backend = self.handle.backend
        book = claim_book(backend)  # before ready(): PostgreSQL adds its tables to the schema
        await self.handle.ready()
        await book.setup(self.owner, self.lease)
        self.book = book
        self.shared = backend.shared
        text = await backend.get(CURSOR_NS, "chat")
        value = json.loads(text) if text else 0
        saved = value if isinstance(value, int) else 0
        self._saved_cursor = saved
        self.cursor = CursorTracker(saved)
        return saved

    def start(self) -> None:
        """Start the heartbeat, the orphan sweeper and the cursor writer."""
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._heartbeat(), name="concordctl-heartbeat"))
        self._tasks.append(loop.create_task(self._cursor_writer(), name="concordctl-cursor"))

    async def sweep(self) -> int:
        """Take over the unfinished claims of dead owners and re-run them; how many."""
        book = self.book
        if book is None or self.redispatch is None:
            return 0
        count = 0
        for handler, key, dead in await book.orphans(self.owner):
            claim = await book.take_over(handler, key, dead, self.owner)
            if claim is None or claim.event is None:
                continue
            count += 1
            self.taken_over += 1
            log.info("running %s again on %s (claimed by %s, which stopped)", handler, key, dead)
            self.redispatch(claim)
        return count

    async def _heartbeat(self) -> None:
        book = self.book
        assert book is not None
        every = max(0.05, self.lease / 3)
        while True:
            await asyncio.sleep(every)
            try:
                await book.heartbeat(self.owner, self.lease)
                if self.shared:
                    await self.sweep()
            except Exception as exc:  # the database is down: try again next beat
                log.warning("state heartbeat failed: %s", exc)

    async def _cursor_writer(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            try:
                await self.save_cursor()
            except Exception as exc:
                log.warning("cannot save the stream cursor: %s", exc)

    async def save_cursor(self) -> None:
        safe = self.cursor.safe
        if safe <= self._saved_cursor:
            return
        backend = self.handle.backend
        if self.shared:
            # Replicas share one cursor: it only moves forward.
            await backend.update(
                CURSOR_NS, "chat", lambda old: max(old if isinstance(old, int) else 0, safe)
            )
        else:
            await backend.set(CURSOR_NS, "chat", str(safe))
        self._saved_cursor = safe

    async def acquire(self, handler: str, ev: Event) -> Claim | None:
        book = self.book
        assert book is not None
        claim = await book.acquire(handler, event_key(ev), self.owner, encode_event(ev))
        if claim is not None and isinstance(ev, ChatSent):
            claim.after_id = ev.chat.id
        return claim

    async def finish(self, claim: Claim) -> None:
        assert self.book is not None
        await self.book.finish(claim)

    async def send_once(
        self,
        claim: Claim,
        channel: int | str,
        content: str,
        send: Callable[[], Awaitable[Chat]],
    ) -> Chat:
        """Send a chat of a claimed call at most once across re-runs of that call."""
        seq = claim.next_seq
        claim.next_seq += 1
        done = claim.replies.get(seq)
        if done is not None:
            return done
        assert self.book is not None
        if claim.attempt > 1 and self.probe is not None:
            for found in await self.probe(channel, content, claim.after_id):
                if any(c.id == found.id for c in claim.replies.values()):
                    continue
                if await self.book.is_recorded(found.id):
                    continue  # the reply of another call with the same text
                claim.replies[seq] = found
                await self.book.record_reply(claim, seq, found)
                return found
        chat = await send()
        claim.replies[seq] = chat
        await self.book.record_reply(claim, seq, chat)
        return chat

    async def may_run(self, name: str) -> bool:
        if self.book is None:
            return False
        return await self.book.hold_lease(name, self.owner)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.book is not None:
            try:
                await self.save_cursor()
                await self.book.retire(self.owner)
            except Exception as exc:
                log.warning("cannot save the bot's state at shutdown: %s", exc)
        self.book = None
