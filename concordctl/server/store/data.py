"""The server's data, on either backend: every query, written once.

Every method is a coroutine that never blocks the event loop (the backend
runs the SQL elsewhere). Search text and every other value travel as
parameters, never spliced into SQL. Writes are transactions of their own;
a method that returns what it wrote (``add_chat``) returns it committed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from concordctl.ids import SnowflakeGenerator, now_ms
from concordctl.protocol import Channel, Chat, FullChannel, Server
from concordctl.server.store.backend import Backend, Conflict, Row
from concordctl.server.store.records import SearchFilter, StoredUser, username_key
from concordctl.server.store.search import fts5_match, parse_query, tsvector
from concordctl.server.store.seed import SEED_DESCRIPTION, SEED_NAME, seed_icon_png
from concordctl.server.store.sqlite import SqliteBackend

__all__ = ["Store"]

_CHAT_COLUMNS = "id, created_at, author_id, channel_id, thread_id, content, edited"
_CHANNEL_COLUMNS = (
    "id, parent_channel_id, ordinality, name, description, capabilities, created_at, "
    "created_by_user_id"
)
_USER_COLUMNS = (
    "id, username, password_hash, password_changed_at, created_at, nickname, bio, avatar_id, "
    "admin, token_version"
)


def _user(row: Row) -> StoredUser:
    return StoredUser(
        id=row[0],
        username=row[1],
        password_hash=row[2],
        password_changed_at=row[3],
        created_at=row[4],
        nickname=row[5],
        bio=row[6],
        avatar_id=row[7],
        admin=bool(row[8]),
        token_version=int(row[9]),
    )


def _channel(row: Row) -> Channel:
    caps = json.loads(row[5]) if row[5] is not None else None
    return Channel(
        id=row[0],
        parent_channel_id=row[1],
        ordinality=row[2],
        name=row[3],
        description=row[4],
        capabilities=caps,
        created_at=row[6],
        created_by_user_id=row[7],
    )


class Store:
    """The data API of the server over one :class:`Backend`.

    Open with :func:`concordctl.server.store.open_store`; ``await
    store.close()`` when done. ``ids`` makes every id (snowflakes above the
    largest id in the database).
    """

    #: Above this many word matches, SQLite walks the time index rather than sorting matches.
    FTS_SORT_LIMIT = 5000

    def __init__(self, backend: Backend, ids: SnowflakeGenerator) -> None:
        self.backend = backend
        self.ids = ids

    @classmethod
    async def on(cls, backend: Backend) -> Store:
        """A store on an opened, migrated backend; ids continue from the largest stored."""
        rows = await backend.fetch(
            "SELECT max(m) FROM (SELECT max(id) AS m FROM chats UNION ALL "
            "SELECT max(id) FROM channels UNION ALL SELECT max(id) FROM users UNION ALL "
            "SELECT max(id) FROM images) AS t"
        )
        return cls(backend, SnowflakeGenerator(int(rows[0][0] or 0)))

    async def close(self) -> None:
        """Close the backend's connections (waits for statements in flight)."""
        await self.backend.close()

    # ---------------------------------------------------------------- server

    async def is_seeded(self) -> bool:
        """True once :meth:`seed` ran on this database."""
        return bool(await self.backend.fetch("SELECT 1 FROM server WHERE id = 1"))

    async def seed(self, admin_password_hash: str) -> bool:
        """Upstream's reset: server data (description, PNG icon), the admin user
        ``admin``, channel ``general``. False (nothing written) when already seeded,
        e.g. by another node that started at the same moment."""
        try:
            return await self._seed(admin_password_hash)
        except Conflict:
            # PostgreSQL: two nodes both found no server row (read committed), and
            # the other's admin row committed first. Nothing of ours was written.
            if await self.is_seeded():
                return False
            raise

    async def _seed(self, admin_password_hash: str) -> bool:
        now = now_ms()
        admin_id, general_id, icon_id = (self.ids.next_id() for _ in range(3))
        async with self.backend.write() as tx:
            if await tx.fetch("SELECT 1 FROM server WHERE id = 1"):
                return False
            await tx.execute(
                "INSERT INTO users (id, username, username_key, password_hash, created_at, "
                "nickname, admin) VALUES (?, 'admin', 'admin', ?, ?, 'admin', ?)",
                (admin_id, admin_password_hash, now, True),
            )
            await tx.execute(
                f"INSERT INTO channels ({_CHANNEL_COLUMNS}) VALUES (?, NULL, 0, 'general', "
                "NULL, ?, ?, ?)",
                (general_id, json.dumps(["text"]), now, admin_id),
            )
            await tx.execute(
                "INSERT INTO images (id, content_type, data, created_at, owner_id) "
                "VALUES (?, 'image/png', ?, ?, NULL)",
                (icon_id, seed_icon_png(), now),
            )
            await tx.execute(
                "INSERT INTO server (id, name, description, icon_id, default_channel_id) "
                "VALUES (1, ?, ?, ?, ?)",
                (SEED_NAME, SEED_DESCRIPTION, icon_id, general_id),
            )
        return True

    async def server(self) -> Server:
        """The server's name, description, icon and default channel."""
        rows = await self.backend.fetch(
            "SELECT name, description, icon_id, default_channel_id FROM server WHERE id = 1"
        )
        row = rows[0]
        return Server(name=row[0], description=row[1], icon_id=row[2], default_channel_id=row[3])

    async def update_server(self, name: str | None, description: str | None) -> Server:
        """Change the name and/or the description (None leaves one as it is)."""
        async with self.backend.write() as tx:
            if name is not None:
                await tx.execute("UPDATE server SET name = ? WHERE id = 1", (name,))
            if description is not None:
                await tx.execute("UPDATE server SET description = ? WHERE id = 1", (description,))
        return await self.server()

    # ----------------------------------------------------------------- users

    async def add_user(self, username: str, password_hash: str) -> StoredUser | None:
        """The new user, or None when the name's key (:func:`username_key`) is taken."""
        user_id = self.ids.next_id()
        try:
            await self.backend.execute(
                "INSERT INTO users (id, username, username_key, password_hash, created_at, "
                "nickname) VALUES (?, ?, ?, ?, ?, ?)",
                (user_id, username, username_key(username), password_hash, now_ms(), username),
            )
        except Conflict:
            return None
        return await self.user(user_id)

    async def user(self, user_id: int) -> StoredUser | None:
        """The user with this id, or None."""
        rows = await self.backend.fetch(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,)
        )
        return _user(rows[0]) if rows else None

    async def user_by_name(self, username: str) -> StoredUser | None:
        """The user whose name has the same key as ``username`` (how logins find users)."""
        rows = await self.backend.fetch(
            f"SELECT {_USER_COLUMNS} FROM users WHERE username_key = ?",
            (username_key(username),),
        )
        return _user(rows[0]) if rows else None

    async def users(self) -> list[StoredUser]:
        """Every user, oldest first."""
        rows = await self.backend.fetch(f"SELECT {_USER_COLUMNS} FROM users ORDER BY id")
        return [_user(r) for r in rows]

    async def set_password(self, user_id: int, password_hash: str) -> StoredUser | None:
        """Store a new password and retire every token issued before (the token
        version goes up); the updated user."""
        await self.backend.execute(
            "UPDATE users SET password_hash = ?, password_changed_at = ?, "
            "token_version = token_version + 1 WHERE id = ?",
            (password_hash, now_ms() // 1000, user_id),
        )
        return await self.user(user_id)

    async def revoke_tokens(self, user_id: int) -> StoredUser | None:
        """Retire every token of the user (logout everywhere); the updated user."""
        await self.backend.execute(
            "UPDATE users SET token_version = token_version + 1 WHERE id = ?", (user_id,)
        )
        return await self.user(user_id)

    async def set_admin(self, user_id: int, admin: bool = True) -> StoredUser | None:
        """Make the user an administrator of the server (or not); the updated user."""
        await self.backend.execute("UPDATE users SET admin = ? WHERE id = ?", (admin, user_id))
        return await self.user(user_id)

    async def set_avatar(self, user_id: int, content_type: str, data: bytes) -> int:
        """Store a new avatar and delete the user's previous one; the new image id."""
        image_id = self.ids.next_id()
        async with self.backend.write() as tx:
            await tx.execute(
                "DELETE FROM images WHERE id IN (SELECT avatar_id FROM users WHERE id = ?)",
                (user_id,),
            )
            await tx.execute(
                "INSERT INTO images (id, content_type, data, created_at, owner_id) "
                "VALUES (?, ?, ?, ?, ?)",
                (image_id, content_type, data, now_ms(), user_id),
            )
            await tx.execute("UPDATE users SET avatar_id = ? WHERE id = ?", (image_id, user_id))
        return image_id

    async def image(self, image_id: int) -> tuple[str, bytes] | None:
        """``(content type, bytes)`` of an image, or None."""
        rows = await self.backend.fetch(
            "SELECT content_type, data FROM images WHERE id = ?", (image_id,)
        )
        return (rows[0][0], bytes(rows[0][1])) if rows else None

    async def image_bytes(self, owner_id: int) -> int:
        """Bytes of the images the user owns (its quota counts these)."""
        rows = await self.backend.fetch(
            "SELECT coalesce(sum(length(data)), 0) FROM images WHERE owner_id = ?", (owner_id,)
        )
        return int(rows[0][0])

    async def image_count(self) -> int:
        """How many images are stored (tests check old avatars go)."""
        rows = await self.backend.fetch("SELECT count(*) FROM images")
        return int(rows[0][0])

    # -------------------------------------------------------------- channels

    async def channel(self, channel_id: int) -> Channel | None:
        """The channel with this id, or None."""
        rows = await self.backend.fetch(
            f"SELECT {_CHANNEL_COLUMNS} FROM channels WHERE id = ?", (channel_id,)
        )
        return _channel(rows[0]) if rows else None

    async def channel_exists(self, channel_id: int) -> bool:
        """True when the channel exists."""
        rows = await self.backend.fetch("SELECT 1 FROM channels WHERE id = ?", (channel_id,))
        return bool(rows)

    async def channel_tree(self) -> list[FullChannel]:
        """Every channel as upstream's tree: top-level channels with their children."""
        rows = await self.backend.fetch(
            f"SELECT {_CHANNEL_COLUMNS} FROM channels ORDER BY ordinality, id"
        )
        by_parent: dict[int | None, list[Channel]] = {}
        ids = {r[0] for r in rows}
        for r in rows:
            ch = _channel(r)
            # An orphan (its parent was removed outside this server) shows at the top.
            parent = ch.parent_channel_id if ch.parent_channel_id in ids else None
            by_parent.setdefault(parent, []).append(ch)

        def build(parent: int | None, depth: int) -> list[FullChannel]:
            if depth > 64:  # cycles cannot be made through the API; stay safe anyway
                return []
            return [
                FullChannel(
                    id=c.id,
                    ordinality=c.ordinality,
                    name=c.name,
                    description=c.description,
                    capabilities=c.capabilities,
                    created_at=c.created_at,
                    created_by_user_id=c.created_by_user_id,
                    children=build(c.id, depth + 1),
                )
                for c in by_parent.get(parent, [])
            ]

        return build(None, 0)

    async def add_channel(
        self,
        *,
        name: str,
        description: str | None,
        parent_channel_id: int | None,
        ordinality: int | None,
        capabilities: list[str] | None,
        created_by: int,
    ) -> tuple[Channel, list[Channel]]:
        """The new channel, and its siblings whose ordinality changed (renumbered 0..n-1)."""
        new_id = self.ids.next_id()
        now = now_ms()
        sibling_params: tuple[int, ...] = ()
        if parent_channel_id is None:
            sibling_sql = "parent_channel_id IS NULL"
        else:
            sibling_sql, sibling_params = "parent_channel_id = ?", (parent_channel_id,)
        async with self.backend.write() as tx:
            siblings = await tx.fetch(
                f"SELECT id, ordinality FROM channels WHERE {sibling_sql} ORDER BY ordinality, id",
                sibling_params,
            )
            wanted = len(siblings) if ordinality is None else ordinality
            # The new channel goes before siblings of equal ordinality: asking
            # for position 0 puts it first.
            order = sorted(
                [(o, 1, i) for i, o in siblings] + [(wanted, 0, new_id)],
                key=lambda t: (t[0], t[1]),
            )
            await tx.execute(
                f"INSERT INTO channels ({_CHANNEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new_id,
                    parent_channel_id,
                    wanted,
                    name,
                    description,
                    json.dumps(capabilities) if capabilities is not None else None,
                    now,
                    created_by,
                ),
            )
            changed: list[int] = []
            for position, (old, _, cid) in enumerate(order):
                if position != old or cid == new_id:
                    await tx.execute(
                        "UPDATE channels SET ordinality = ? WHERE id = ?", (position, cid)
                    )
                    if cid != new_id:
                        changed.append(cid)
        created = await self.channel(new_id)
        assert created is not None
        moved = [await self.channel(i) for i in changed]
        return created, [c for c in moved if c is not None]

    async def update_channel(
        self, channel_id: int, name: str | None, description: str | None
    ) -> Channel | None:
        """Rename and/or describe a channel (None leaves a field); None if it is gone."""
        async with self.backend.write() as tx:
            if name is not None:
                await tx.execute("UPDATE channels SET name = ? WHERE id = ?", (name, channel_id))
            if description is not None:
                await tx.execute(
                    "UPDATE channels SET description = ? WHERE id = ?", (description, channel_id)
                )
        return await self.channel(channel_id)

    async def delete_channel(self, channel_id: int) -> list[int]:
        """Delete a channel, its sub-channels and their chats; the ids deleted."""
        async with self.backend.write() as tx:
            doomed: list[int] = []
            frontier = [channel_id]
            while frontier:
                doomed.extend(frontier)
                marks = ",".join("?" * len(frontier))
                frontier = [
                    r[0]
                    for r in await tx.fetch(
                        f"SELECT id FROM channels WHERE parent_channel_id IN ({marks})", frontier
                    )
                ]
            for cid in doomed:
                await tx.execute(
                    "DELETE FROM reactions WHERE chat_id IN "
                    "(SELECT id FROM chats WHERE channel_id = ?)",
                    (cid,),
                )
                await tx.execute("DELETE FROM chats WHERE channel_id = ?", (cid,))
                await tx.execute("DELETE FROM channels WHERE id = ?", (cid,))
            await tx.execute(
                f"UPDATE server SET default_channel_id = NULL WHERE default_channel_id IN "
                f"({','.join('?' * len(doomed))})",
                doomed,
            )
        return doomed

    # ----------------------------------------------------------------- chats

    def _chat_insert(self) -> str:
        if self.backend.stores_words:
            return (
                f"INSERT INTO chats ({_CHAT_COLUMNS}, words) VALUES (?, ?, ?, ?, ?, ?, ?, "
                "?::tsvector)"
            )
        return f"INSERT INTO chats ({_CHAT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"

    async def add_chat(
        self,
        *,
        channel_id: int,
        author_id: int,
        content: str,
        created_at: int,
        thread_id: int | None,
    ) -> Chat:
        """Store a new chat (committed when this returns); the chat as sent on the wire."""
        chat_id = self.ids.next_id()
        params: tuple[Any, ...] = (
            chat_id,
            created_at,
            author_id,
            channel_id,
            thread_id,
            content,
            False,
        )
        if self.backend.stores_words:
            params += (tsvector(content),)
        await self.backend.execute(self._chat_insert(), params)
        return Chat(
            id=chat_id,
            created_at=created_at,
            author_id=author_id,
            channel_id=channel_id,
            thread_id=thread_id,
            content=content,
            edited=False,
            reactions={},
        )

    async def add_chats_bulk(self, rows: Iterable[tuple[int, int, int, int | None, str]]) -> int:
        """Insert ``(created_at, author_id, channel_id, thread_id, content)`` rows fast.

        For seeding large data sets (benchmarks, the index test). Returns the count.
        """
        ids = self.ids
        return await self.backend.bulk_insert_chats(
            (ids.next_id(), created_at, author_id, channel_id, thread_id, content)
            for created_at, author_id, channel_id, thread_id, content in rows
        )

    async def chat(self, chat_id: int) -> Chat | None:
        """The chat with its reaction counts, or None."""
        rows = await self.backend.fetch(
            f"SELECT {_CHAT_COLUMNS} FROM chats WHERE id = ?", (chat_id,)
        )
        return (await self._chats(rows))[0] if rows else None

    async def _chats(self, rows: Sequence[Row]) -> list[Chat]:
        counts: dict[int, dict[str, int]] = {}
        if rows:
            ids = [r[0] for r in rows]
            marks = ",".join("?" * len(ids))
            order = self.backend.reaction_order
            for chat_id, reaction, n in await self.backend.fetch(
                f"SELECT chat_id, reaction, count(*) FROM reactions WHERE chat_id IN ({marks}) "
                f"GROUP BY chat_id, reaction ORDER BY min({order})",
                ids,
            ):
                counts.setdefault(chat_id, {})[reaction] = int(n)
        return [
            Chat(
                id=r[0],
                created_at=r[1],
                author_id=r[2],
                channel_id=r[3],
                thread_id=r[4],
                content=r[5],
                edited=bool(r[6]),
                reactions=counts.get(r[0], {}),
            )
            for r in rows
        ]

    async def edit_chat(self, chat_id: int, content: str) -> Chat | None:
        """Replace a chat's content (marking it edited); the chat, or None if it is gone."""
        if self.backend.stores_words:
            await self.backend.execute(
                "UPDATE chats SET content = ?, edited = ?, words = ?::tsvector WHERE id = ?",
                (content, True, tsvector(content), chat_id),
            )
        else:
            await self.backend.execute(
                "UPDATE chats SET content = ?, edited = ? WHERE id = ?", (content, True, chat_id)
            )
        return await self.chat(chat_id)

    async def delete_chat(self, chat_id: int) -> None:
        """Delete a chat and its reactions (nothing happens if it does not exist)."""
        async with self.backend.write() as tx:
            await tx.execute("DELETE FROM reactions WHERE chat_id = ?", (chat_id,))
            await tx.execute("DELETE FROM chats WHERE id = ?", (chat_id,))

    async def latest(self, channel_id: int, size: int) -> list[Chat]:
        """The channel's ``size`` newest chats, newest first (by createdAt, then id)."""
        rows = await self.backend.fetch(
            f"SELECT {_CHAT_COLUMNS} FROM chats WHERE channel_id = ? "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (channel_id, size),
        )
        return await self._chats(rows)

    async def search_sql(self, f: SearchFilter) -> tuple[str, list[Any]] | None:
        """The statement and parameters for a search; None when it cannot match.

        On SQLite, a word search that matches many chats (a common word at a
        million chats) walks the ``created_at`` index newest first and stops
        after one page instead of sorting hundreds of thousands of rows; one
        that matches few sorts its matches.
        """
        walk_time_index = False
        where: list[str] = []
        params: list[Any] = []
        if f.query is not None and f.query.strip():
            terms = parse_query(f.query)
            if terms is None:
                return None
            condition, param = self.backend.fts_condition(terms)
            where.append(condition)
            params.append(param)
            backend = self.backend
            walk_time_index = (
                isinstance(backend, SqliteBackend)
                and f.author_id is None
                and f.channel_id is None
                and f.thread_id in (None, -1)
                and await backend.count_matches(fts5_match(terms), self.FTS_SORT_LIMIT)
                >= self.FTS_SORT_LIMIT
            )
        if f.author_id is not None:
            where.append("author_id = ?")
            params.append(f.author_id)
        if f.channel_id is not None:
            where.append("channel_id = ?")
            params.append(f.channel_id)
        if f.thread_id is not None:
            if f.thread_id == -1:
                where.append("thread_id IS NULL")
            else:
                where.append("thread_id = ?")
                params.append(f.thread_id)
        if f.before is not None:
            where.append("created_at < ?")
            params.append(f.before)
        if f.after is not None:
            where.append("created_at > ?")
            params.append(f.after)
        sql = f"SELECT {_CHAT_COLUMNS} FROM chats"
        if walk_time_index:
            sql += " INDEXED BY chats_time"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        params += [f.size, f.page * f.size]
        return sql, params

    async def search(self, f: SearchFilter) -> list[Chat]:
        """``GET /chats``: the page of matching chats, newest first."""
        stmt = await self.search_sql(f)
        if stmt is None:
            return []
        return await self._chats(await self.backend.fetch(*stmt))

    # ------------------------------------------------------------- reactions

    async def react(self, chat_id: int, user_id: int, reaction: str, adding: bool) -> None:
        """Add (idempotent) or remove one user's reaction to a chat."""
        if adding:
            await self.backend.execute(
                "INSERT INTO reactions (chat_id, reaction, user_id) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (chat_id, reaction, user_id),
            )
        else:
            await self.backend.execute(
                "DELETE FROM reactions WHERE chat_id = ? AND reaction = ? AND user_id = ?",
                (chat_id, reaction, user_id),
            )

    async def reactions(self, chat_id: int) -> dict[str, list[int]]:
        """Who reacted with what, reactions in the order they were first given."""
        users: dict[str, list[int]] = {}
        order = self.backend.reaction_order
        for reaction, user_id in await self.backend.fetch(
            f"SELECT reaction, user_id FROM reactions WHERE chat_id = ? ORDER BY {order}",
            (chat_id,),
        ):
            users.setdefault(reaction, []).append(user_id)
        return users
