"""SQLite storage of the embedded server: one connection, used from the event loop.

Every query is a parameterised statement; search text goes to FTS5 as a
parameter, never spliced into SQL. Indexes keep ``latest`` and ``search``
fast at millions of chats (``tests/server/test_store.py`` checks the plans).

The connection is used only from the loop thread: queries are short (index
lookups), and one writer avoids SQLite's locking entirely.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from concordctl.protocol import Channel, Chat, FullChannel, Profile, Server

__all__ = [
    "EPOCH_MS",
    "SearchFilter",
    "SnowflakeGenerator",
    "Store",
    "StoredUser",
]

#: Upstream's snowflake epoch, 2021-10-10T00:00:00Z, in Unix milliseconds.
EPOCH_MS = 1633824000000
_SEQUENCE_BITS = 22
_SEQUENCE_MASK = (1 << _SEQUENCE_BITS) - 1
#: With a node number: 10 bits of node, then 12 of sequence.
_NODE_SEQUENCE_BITS = 12
_NODE_MASK = (1 << (_SEQUENCE_BITS - _NODE_SEQUENCE_BITS)) - 1
#: The largest id SQLite (and Java's long) can hold.
MAX_ID = (1 << 63) - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS server (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    description TEXT,
    icon_id INTEGER,
    default_channel_id INTEGER
);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    password_changed_at INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    nickname TEXT NOT NULL,
    bio TEXT,
    avatar_id INTEGER
);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    content_type TEXT NOT NULL,
    data BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
    id INTEGER PRIMARY KEY,
    parent_channel_id INTEGER,
    ordinality INTEGER NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    capabilities TEXT,
    created_at INTEGER NOT NULL,
    created_by_user_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS channels_parent ON channels (parent_channel_id, ordinality);
CREATE TABLE IF NOT EXISTS chats (
    id INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    author_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    thread_id INTEGER,
    content TEXT NOT NULL,
    edited INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS chats_channel_time ON chats (channel_id, created_at, id);
CREATE INDEX IF NOT EXISTS chats_author_time ON chats (author_id, created_at, id);
CREATE INDEX IF NOT EXISTS chats_thread_time ON chats (thread_id, created_at, id);
CREATE INDEX IF NOT EXISTS chats_time ON chats (created_at, id);
CREATE VIRTUAL TABLE IF NOT EXISTS chats_fts USING fts5 (
    content, content='chats', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS chats_fts_insert AFTER INSERT ON chats BEGIN
    INSERT INTO chats_fts (rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER IF NOT EXISTS chats_fts_delete AFTER DELETE ON chats BEGIN
    INSERT INTO chats_fts (chats_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER IF NOT EXISTS chats_fts_update AFTER UPDATE OF content ON chats BEGIN
    INSERT INTO chats_fts (chats_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO chats_fts (rowid, content) VALUES (new.id, new.content);
END;
CREATE TABLE IF NOT EXISTS reactions (
    chat_id INTEGER NOT NULL,
    reaction TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    UNIQUE (chat_id, reaction, user_id)
);
"""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SnowflakeGenerator:
    """Ids as upstream makes them: ``(ms since 2021-10-10) << 22 | sequence``.

    Strictly increasing, even if the clock steps back or a millisecond runs
    out of sequence numbers (then the next millisecond is borrowed). With a
    ``node_id`` (several nodes on one database, ``cluster.py``) the 22 low bits
    are ``node << 12 | sequence``, so nodes never make the same id.
    """

    def __init__(self, floor: int = 0, node_id: int | None = None) -> None:
        self._last = floor
        self._lock = threading.Lock()
        self.node_id = node_id

    def next_id(self) -> int:
        with self._lock:
            node = self.node_id
            candidate = (now_ms() - EPOCH_MS) << _SEQUENCE_BITS
            if node is not None:
                candidate |= node << _NODE_SEQUENCE_BITS
            if candidate > self._last:
                self._last = candidate
            elif node is None:
                self._last += 1
            else:
                following = self._last + 1
                if (following >> _NODE_SEQUENCE_BITS) & _NODE_MASK != node:
                    # Out of sequence numbers (or past another node's id): next millisecond.
                    following = ((self._last >> _SEQUENCE_BITS) + 1) << _SEQUENCE_BITS
                    following |= node << _NODE_SEQUENCE_BITS
                self._last = following
            return self._last


@dataclass(frozen=True, slots=True)
class StoredUser:
    id: int
    username: str
    password_hash: str
    password_changed_at: int
    created_at: int
    nickname: str
    bio: str | None
    avatar_id: int | None

    @property
    def profile(self) -> Profile:
        return Profile(
            created_at=self.created_at,
            nickname=self.nickname,
            bio=self.bio,
            avatar_id=self.avatar_id,
        )


@dataclass(slots=True)
class SearchFilter:
    """``GET /chats``: every field optional; ``thread_id == -1`` means no thread."""

    query: str | None = None
    author_id: int | None = None
    channel_id: int | None = None
    thread_id: int | None = None
    before: int | None = None
    after: int | None = None
    page: int = 0
    size: int = 50


def fts_any_word(text: str) -> str | None:
    """An FTS5 query matching any word of ``text``, each quoted as a literal.

    Quoting each word (``"a" OR "b"``) keeps FTS5 syntax in user text inert.
    None when the text holds no word at all.
    """
    words = [w for w in "".join(c if c.isalnum() else " " for c in text).split() if w]
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in dict.fromkeys(words))


_CHAT_COLUMNS = "id, created_at, author_id, channel_id, thread_id, content, edited"
_CHANNEL_COLUMNS = (
    "id, parent_channel_id, ordinality, name, description, capabilities, created_at, "
    "created_by_user_id"
)


class Store:
    """The server's data. Methods are synchronous and fast; call from one thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:" and not os.path.exists(path):
            # The database holds password hashes: owner-only from the first byte.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=OFF")
        self._db.executescript(_SCHEMA)
        row = self._db.execute(
            "SELECT max(m) FROM (SELECT max(id) AS m FROM chats UNION ALL "
            "SELECT max(id) FROM channels UNION ALL SELECT max(id) FROM users UNION ALL "
            "SELECT max(id) FROM images)"
        ).fetchone()
        self.ids = SnowflakeGenerator(int(row[0] or 0))

    def close(self) -> None:
        self._db.close()

    # ---------------------------------------------------------------- server

    def is_seeded(self) -> bool:
        return self._db.execute("SELECT 1 FROM server WHERE id = 1").fetchone() is not None

    def seed(self, admin_password_hash: str) -> None:
        """Upstream's reset: server data, user ``admin``, channel ``general``."""
        now = now_ms()
        with self._tx():
            admin_id = self.ids.next_id()
            self._db.execute(
                "INSERT INTO users (id, username, password_hash, created_at, nickname) "
                "VALUES (?, 'admin', ?, ?, 'admin')",
                (admin_id, admin_password_hash, now),
            )
            general_id = self.ids.next_id()
            self._db.execute(
                f"INSERT INTO channels ({_CHANNEL_COLUMNS}) VALUES (?, NULL, 0, 'general', "
                "NULL, ?, ?, ?)",
                (general_id, json.dumps(["text"]), now, admin_id),
            )
            self._db.execute(
                "INSERT INTO server (id, name, description, icon_id, default_channel_id) "
                "VALUES (1, 'My Concord Server', NULL, NULL, ?)",
                (general_id,),
            )

    def server(self) -> Server:
        row = self._db.execute(
            "SELECT name, description, icon_id, default_channel_id FROM server WHERE id = 1"
        ).fetchone()
        return Server(name=row[0], description=row[1], icon_id=row[2], default_channel_id=row[3])

    # ----------------------------------------------------------------- users

    def add_user(self, username: str, password_hash: str) -> StoredUser | None:
        """The new user, or None when the name is taken."""
        now = now_ms()
        user_id = self.ids.next_id()
        try:
            self._db.execute(
                "INSERT INTO users (id, username, password_hash, created_at, nickname) "
                "VALUES (?, ?, ?, ?, ?)",
                (user_id, username, password_hash, now, username),
            )
        except sqlite3.IntegrityError:
            return None
        return self.user(user_id)

    _USER_COLUMNS = (
        "id, username, password_hash, password_changed_at, created_at, nickname, bio, avatar_id"
    )

    def user(self, user_id: int) -> StoredUser | None:
        row = self._db.execute(
            f"SELECT {self._USER_COLUMNS} FROM users WHERE id = ?", (user_id,)
        ).fetchone()
        return StoredUser(*row) if row else None

    def user_by_name(self, username: str) -> StoredUser | None:
        row = self._db.execute(
            f"SELECT {self._USER_COLUMNS} FROM users WHERE username = ?", (username,)
        ).fetchone()
        return StoredUser(*row) if row else None

    def users(self) -> list[StoredUser]:
        rows = self._db.execute(f"SELECT {self._USER_COLUMNS} FROM users ORDER BY id").fetchall()
        return [StoredUser(*r) for r in rows]

    def set_password(self, user_id: int, password_hash: str, changed_at: int) -> None:
        self._db.execute(
            "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
            (password_hash, changed_at, user_id),
        )

    def set_avatar(self, user_id: int, content_type: str, data: bytes) -> int:
        image_id = self.ids.next_id()
        with self._tx():
            self._db.execute(
                "INSERT INTO images (id, content_type, data, created_at) VALUES (?, ?, ?, ?)",
                (image_id, content_type, data, now_ms()),
            )
            self._db.execute("UPDATE users SET avatar_id = ? WHERE id = ?", (image_id, user_id))
        return image_id

    def image(self, image_id: int) -> tuple[str, bytes] | None:
        row = self._db.execute(
            "SELECT content_type, data FROM images WHERE id = ?", (image_id,)
        ).fetchone()
        return (row[0], bytes(row[1])) if row else None

    # -------------------------------------------------------------- channels

    @staticmethod
    def _channel(row: Sequence[Any]) -> Channel:
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

    def channel(self, channel_id: int) -> Channel | None:
        row = self._db.execute(
            f"SELECT {_CHANNEL_COLUMNS} FROM channels WHERE id = ?", (channel_id,)
        ).fetchone()
        return self._channel(row) if row else None

    def channel_exists(self, channel_id: int) -> bool:
        return (
            self._db.execute("SELECT 1 FROM channels WHERE id = ?", (channel_id,)).fetchone()
            is not None
        )

    def channel_tree(self) -> list[FullChannel]:
        rows = self._db.execute(
            f"SELECT {_CHANNEL_COLUMNS} FROM channels ORDER BY ordinality, id"
        ).fetchall()
        by_parent: dict[int | None, list[Channel]] = {}
        ids = {r[0] for r in rows}
        for r in rows:
            ch = self._channel(r)
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

    def add_channel(
        self,
        *,
        name: str,
        description: str | None,
        parent_channel_id: int | None,
        ordinality: int | None,
        capabilities: list[str] | None,
        created_by: int,
    ) -> tuple[Channel, list[Channel]]:
        """The new channel, and its siblings whose ordinality changed."""
        new_id = self.ids.next_id()
        now = now_ms()
        with self._tx():
            siblings = self._db.execute(
                "SELECT id, ordinality FROM channels WHERE parent_channel_id IS ? "
                "ORDER BY ordinality, id",
                (parent_channel_id,),
            ).fetchall()
            wanted = len(siblings) if ordinality is None else ordinality
            # The new channel goes before siblings of equal ordinality: asking
            # for position 0 puts it first.
            order = sorted(
                [(o, 1, i) for i, o in siblings] + [(wanted, 0, new_id)],
                key=lambda t: (t[0], t[1]),
            )
            self._db.execute(
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
                    self._db.execute(
                        "UPDATE channels SET ordinality = ? WHERE id = ?", (position, cid)
                    )
                    if cid != new_id:
                        changed.append(cid)
        created = self.channel(new_id)
        assert created is not None
        return created, [c for c in (self.channel(i) for i in changed) if c is not None]

    def delete_channel(self, channel_id: int) -> list[int]:
        """Delete a channel, its sub-channels and their chats; the ids deleted."""
        doomed: list[int] = []
        frontier = [channel_id]
        while frontier:
            doomed.extend(frontier)
            marks = ",".join("?" * len(frontier))
            frontier = [
                r[0]
                for r in self._db.execute(
                    f"SELECT id FROM channels WHERE parent_channel_id IN ({marks})", frontier
                )
            ]
        with self._tx():
            for cid in doomed:
                self._db.execute(
                    "DELETE FROM reactions WHERE chat_id IN "
                    "(SELECT id FROM chats WHERE channel_id = ?)",
                    (cid,),
                )
                self._db.execute("DELETE FROM chats WHERE channel_id = ?", (cid,))
                self._db.execute("DELETE FROM channels WHERE id = ?", (cid,))
            self._db.execute(
                f"UPDATE server SET default_channel_id = NULL WHERE default_channel_id IN "
                f"({','.join('?' * len(doomed))})",
                doomed,
            )
        return doomed

    # ----------------------------------------------------------------- chats

    def add_chat(
        self,
        *,
        channel_id: int,
        author_id: int,
        content: str,
        created_at: int,
        thread_id: int | None,
    ) -> Chat:
        chat_id = self.ids.next_id()
        self._db.execute(
            f"INSERT INTO chats ({_CHAT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0)",
            (chat_id, created_at, author_id, channel_id, thread_id, content),
        )
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

    def add_chats_bulk(self, rows: Iterable[tuple[int, int, int, int | None, str]]) -> int:
        """Insert ``(created_at, author_id, channel_id, thread_id, content)`` rows fast.

        For seeding large data sets (benchmarks, the index test). Returns the count.
        """
        count = 0
        with self._tx():
            for created_at, author_id, channel_id, thread_id, content in rows:
                self._db.execute(
                    f"INSERT INTO chats ({_CHAT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0)",
                    (self.ids.next_id(), created_at, author_id, channel_id, thread_id, content),
                )
                count += 1
        return count

    def chat(self, chat_id: int) -> Chat | None:
        row = self._db.execute(
            f"SELECT {_CHAT_COLUMNS} FROM chats WHERE id = ?", (chat_id,)
        ).fetchone()
        return self._chats([row])[0] if row else None

    def _chats(self, rows: Sequence[Sequence[Any]]) -> list[Chat]:
        counts: dict[int, dict[str, int]] = {}
        if rows:
            ids = [r[0] for r in rows]
            marks = ",".join("?" * len(ids))
            for chat_id, reaction, n in self._db.execute(
                f"SELECT chat_id, reaction, count(*) FROM reactions WHERE chat_id IN ({marks}) "
                "GROUP BY chat_id, reaction ORDER BY min(rowid)",
                ids,
            ):
                counts.setdefault(chat_id, {})[reaction] = n
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

    def edit_chat(self, chat_id: int, content: str) -> Chat | None:
        self._db.execute(
            "UPDATE chats SET content = ?, edited = 1 WHERE id = ?", (content, chat_id)
        )
        return self.chat(chat_id)

    def delete_chat(self, chat_id: int) -> None:
        with self._tx():
            self._db.execute("DELETE FROM reactions WHERE chat_id = ?", (chat_id,))
            self._db.execute("DELETE FROM chats WHERE id = ?", (chat_id,))

    def latest(self, channel_id: int, size: int) -> list[Chat]:
        rows = self._db.execute(
            f"SELECT {_CHAT_COLUMNS} FROM chats WHERE channel_id = ? "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (channel_id, size),
        ).fetchall()
        return self._chats(rows)

    #: Above this many word matches, walking the time index beats sorting matches.
    FTS_SORT_LIMIT = 5000

    def _many_matches(self, match: str) -> bool:
        row = self._db.execute(
            "SELECT count(*) FROM (SELECT rowid FROM chats_fts WHERE chats_fts MATCH ? LIMIT ?)",
            (match, self.FTS_SORT_LIMIT),
        ).fetchone()
        return bool(row[0] >= self.FTS_SORT_LIMIT)

    def search_sql(self, f: SearchFilter) -> tuple[str, list[Any]] | None:
        """The statement and parameters for a search; None when it cannot match.

        A word search that matches few chats sorts its matches; one that
        matches many (a common word at a million chats) walks the
        ``created_at`` index newest first and stops after one page instead
        of sorting hundreds of thousands of rows.
        """
        walk_time_index = False
        where: list[str] = []
        params: list[Any] = []
        if f.query is not None and f.query.strip():
            match = fts_any_word(f.query)
            if match is None:
                return None
            where.append("id IN (SELECT rowid FROM chats_fts WHERE chats_fts MATCH ?)")
            params.append(match)
            walk_time_index = (
                f.author_id is None
                and f.channel_id is None
                and f.thread_id in (None, -1)
                and self._many_matches(match)
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

    def search(self, f: SearchFilter) -> list[Chat]:
        stmt = self.search_sql(f)
        if stmt is None:
            return []
        return self._chats(self._db.execute(*stmt).fetchall())

    def explain(self, sql: str, params: Sequence[Any]) -> list[str]:
        """The query plan's details, for tests that pin the indexes down."""
        return [r[3] for r in self._db.execute("EXPLAIN QUERY PLAN " + sql, params)]

    # ------------------------------------------------------------- reactions

    def react(self, chat_id: int, user_id: int, reaction: str, adding: bool) -> None:
        if adding:
            self._db.execute(
                "INSERT OR IGNORE INTO reactions (chat_id, reaction, user_id) VALUES (?, ?, ?)",
                (chat_id, reaction, user_id),
            )
        else:
            self._db.execute(
                "DELETE FROM reactions WHERE chat_id = ? AND reaction = ? AND user_id = ?",
                (chat_id, reaction, user_id),
            )

    def reactions(self, chat_id: int) -> dict[str, list[int]]:
        users: dict[str, list[int]] = {}
        for reaction, user_id in self._db.execute(
            "SELECT reaction, user_id FROM reactions WHERE chat_id = ? ORDER BY rowid",
            (chat_id,),
        ):
            users.setdefault(reaction, []).append(user_id)
        return users

    # -------------------------------------------------------------- plumbing

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN/COMMIT around a block; ROLLBACK when it raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
