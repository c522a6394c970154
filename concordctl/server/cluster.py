"""Several ``concordctl serve`` nodes on one PostgreSQL database, as one server.

Every node keeps its own websockets; what one node's clients must see from
another's travels through PostgreSQL ``LISTEN/NOTIFY`` on one channel,
:data:`CHANNEL`. PostgreSQL delivers notifications to every listener in the
order their transactions committed, so a node does not deliver its own
events straight to its sockets either: it publishes them and delivers what
comes back, like everyone else. Every client on every node therefore sees
one order, the database's.

What a node publishes (one notification each, the first character says what):

``E<frame>``
    an event frame, delivered to every local socket as it is;
``R<id>``
    the same by reference, for frames over NOTIFY's 8000-byte limit: the
    frame is a row of ``concord_cluster_payloads``, fetched before anything
    after it is delivered (so order holds);
``C<json>``
    a control message: presence (``{"k": "presence", "n": node, "u": user,
    "on": bool}``), "close this user's sockets" (``{"k": "close", "u": user,
    "code": int, "reason": str}``) and login failures (``{"k": "login", "l":
    limiter, "key": key}``).

Membership is a session advisory lock per node number (:data:`LOCK_CLASS`,
node): taking the first free one at start is the node-id allocation, and
PostgreSQL drops it the moment a node's connection dies (SIGKILL included),
which is how the others notice a dead node (:meth:`Cluster._watch` reads
``pg_locks``) and drop its users' presence. Presence rows
(``concord_cluster_presence``) let a node that starts later learn who is
online elsewhere.

Known limit: a chat commits in the store's transaction and its notification
in the publisher's, a moment later. A node killed between the two leaves
that one chat in the database but never announced live; the clients of the
other nodes see it at their next recovery (history), not as an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from concordctl.server.fanout import close_local, status_frame

if TYPE_CHECKING:
    import psycopg

    from concordctl.server.auth import LoginLimiter
    from concordctl.server.hub import Hub

__all__ = [
    "CHANNEL",
    "LOCK_CLASS",
    "MAX_NODE_ID",
    "NODE_BITS",
    "Cluster",
    "ClusterError",
]

log = logging.getLogger("concordctl.server.cluster")

#: The NOTIFY channel every node listens on.
CHANNEL = "concord_events"
#: First key of the nodes' advisory locks ("Conc"); the second is the node number.
LOCK_CLASS = 0x436F6E63
#: Bits of a snowflake id that hold the node number (then 12 bits of sequence).
NODE_BITS = 10
MAX_NODE_ID = (1 << NODE_BITS) - 1
#: NOTIFY refuses payloads of 8000 bytes or more; leave room for the prefix.
MAX_INLINE_BYTES = 7900
#: How often a node looks for dead nodes (seconds); also the presence delay of a SIGKILL.
WATCH_INTERVAL = 0.5
#: Payload rows older than this are deleted (every node has long fetched them).
PAYLOAD_TTL_SECONDS = 300

_SCHEMA = """
CREATE TABLE IF NOT EXISTS concord_cluster_payloads (
    id BIGSERIAL PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS concord_cluster_presence (
    node_id INTEGER NOT NULL,
    user_id BIGINT NOT NULL,
    PRIMARY KEY (node_id, user_id)
);
CREATE TABLE IF NOT EXISTS concord_cluster_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pem TEXT NOT NULL
);
"""

_LIVE_NODES = """
SELECT objid::int FROM pg_locks
WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2 AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


class ClusterError(Exception):
    """The node cannot join (its number is taken, all are taken, the database refuses)."""


class _Kind(enum.Enum):
    EVENT = "E"
    REFERENCE = "R"
    CONTROL = "C"


@dataclass(slots=True)
class _Outgoing:
    """One notification waiting for the publisher, with its side effect in the database."""

    kind: _Kind
    body: str
    #: SQL run in the same transaction as the notification (presence rows).
    effect: tuple[str, tuple[Any, ...]] | None = None


class Cluster:
    """This node's part in a server of several nodes on one PostgreSQL database.

    ``await Cluster(url, hub, online).start()`` joins (allocating the node
    number unless ``node_id`` is given), after which :meth:`publish`,
    :meth:`presence` and :meth:`close_user` act on every node, and
    :attr:`online` is the whole server's presence. :meth:`stop` leaves.
    Must run in the event loop of the hub.
    """

    def __init__(
        self,
        url: str,
        hub: Hub,
        online: set[int],
        *,
        node_id: int | None = None,
        watch_interval: float = WATCH_INTERVAL,
    ) -> None:
        self.url = url
        self.hub = hub
        #: The server's presence: users with an announced socket on any live node.
        #: The same set object as ``ServerState.online``.
        self.online = online
        #: Asked for by the operator (``--node-id``), or None for the first free one.
        self.requested_node_id = node_id
        #: This node's number, set by :meth:`start`.
        self.node_id: int = -1
        self.watch_interval = watch_interval
        #: Which nodes have an announced socket of each user (this one included).
        self._where: dict[int, set[int]] = {}
        #: Users this node has announced (so announcing twice publishes once).
        self._announced: set[int] = set()
        #: How to record another node's login failure, by limiter name (not republished).
        self._limiters: dict[str, Callable[[str], None]] = {}
        #: Notifications in the order this node produced them, for the publisher task.
        self._outbox: asyncio.Queue[_Outgoing] = asyncio.Queue()
        #: Holds the node's lock and LISTENs; nothing else runs on it.
        self._listen: psycopg.AsyncConnection[Any] | None = None
        #: Publishes and queries (fetching payloads, pg_locks, presence rows).
        self._work: psycopg.AsyncConnection[Any] | None = None
        self._work_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._live_nodes: set[int] = set()
        #: Called when the node lost the database: it cannot deliver any more,
        #: so its owner stops it (its clients reconnect elsewhere and recover).
        self.on_lost: Callable[[], None] | None = None
        #: Events delivered to this node's hub from the channel (benchmarks count them).
        self.delivered = 0
        #: Notifications queued / handed to PostgreSQL (committed or given up on),
        #: so a response can wait until what its request published has left.
        self._queued = 0
        self._settled = 0
        self._settle = asyncio.Condition()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, create the cluster tables, take a node number, LISTEN, load presence."""
        import psycopg

        try:
            self._listen = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            self._work = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            async with self._work.transaction():
                # Several nodes starting at once must not race CREATE TABLE IF NOT EXISTS.
                await self._work.execute("SELECT pg_advisory_xact_lock(%s, -1)", (LOCK_CLASS,))
                await self._work.execute(_SCHEMA)
            self.node_id = await self._take_node_id(self._listen)
            await self._listen.execute(f"LISTEN {CHANNEL}")
            # Rows of an earlier holder of this number are stale: it is dead.
            await self._work.execute(
                "DELETE FROM concord_cluster_presence WHERE node_id = %s", (self.node_id,)
            )
            self._live_nodes = await self._query_live_nodes()
            cursor = await self._work.execute(
                "SELECT node_id, user_id FROM concord_cluster_presence"
            )
            for node, user in await cursor.fetchall():
                if node in self._live_nodes:
                    self._where.setdefault(user, set()).add(node)
            self.online.clear()
            self.online.update(self._where)
        except psycopg.Error as exc:
            await self._close_connections()
            raise ClusterError(f"cannot join the cluster: {_one_line(exc)}") from None
        except BaseException:
            await self._close_connections()
            raise
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._receive(), name="cluster-receive"),
            loop.create_task(self._publish(), name="cluster-publish"),
            loop.create_task(self._watch(), name="cluster-watch"),
        ]
        log.info("joined as node %s", self.node_id)

    async def _take_node_id(self, conn: psycopg.AsyncConnection[Any]) -> int:
        async def take(n: int) -> bool:
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, n))
            row = await cursor.fetchone()
            return bool(row and row[0])

        if self.requested_node_id is not None:
            if not await take(self.requested_node_id):
                raise ClusterError(
                    f"node id {self.requested_node_id} is taken by a running node; "
                    "use --node-id auto"
                )
            return self.requested_node_id
        busy = await self._query_live_nodes(conn)
        for n in range(MAX_NODE_ID + 1):
            if n not in busy and await take(n):
                return n
        raise ClusterError(f"all {MAX_NODE_ID + 1} node ids are taken")

    async def stop(self) -> None:
        """Leave: withdraw this node's presence (others see OFFLINE), release the number."""
        for task in self._tasks:
            if task.get_name() != "cluster-publish":
                task.cancel()
        for user in list(self._announced):
            self.presence(user, False)
        publisher = [t for t in self._tasks if t.get_name() == "cluster-publish"]
        if publisher and not publisher[0].done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), timeout=2.0)
            publisher[0].cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self._close_connections()

    async def _close_connections(self) -> None:
        for conn in (self._listen, self._work):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._listen = self._work = None

    # ------------------------------------------------------------ the API

    def publish(self, frame: str) -> None:
        """Deliver ``frame`` to every client of every node, in the database's order."""
        self._enqueue(_Outgoing(_Kind.EVENT, frame))

    def presence(self, user_id: int, present: bool) -> None:
        """This node has (``present``) or no longer has an announced socket of the
        user; the server's presence changes when the first node has one / the last
        has none, and every node tells its clients."""
        if present == (user_id in self._announced):
            return
        if present:
            self._announced.add(user_id)
            effect = (
                "INSERT INTO concord_cluster_presence (node_id, user_id) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                (self.node_id, user_id),
            )
        else:
            self._announced.discard(user_id)
            effect = (
                "DELETE FROM concord_cluster_presence WHERE node_id = %s AND user_id = %s",
                (self.node_id, user_id),
            )
        body = {"k": "presence", "n": self.node_id, "u": user_id, "on": present}
        self._enqueue(_Outgoing(_Kind.CONTROL, json.dumps(body), effect))

    def close_user(self, user_id: int, code: int, reason: str) -> None:
        """Close every socket of the user, on every node, with ``code``."""
        body = {"k": "close", "u": user_id, "code": code, "reason": reason}
        self._enqueue(_Outgoing(_Kind.CONTROL, json.dumps(body)))

    def nodes_of(self, user_id: int) -> frozenset[int]:
        """The live nodes that have an announced socket of the user."""
        return frozenset(self._where.get(user_id, ()))

    def share_limiter(self, name: str, limiter: LoginLimiter) -> None:
        """Count ``limiter``'s failures on every node: a failure recorded here is
        published, and others' failures are recorded here."""
        record = limiter.failed
        self._limiters[name] = record

        def failed(key: str) -> None:
            record(key)
            body = {"k": "login", "l": name, "key": key, "n": self.node_id}
            self._enqueue(_Outgoing(_Kind.CONTROL, json.dumps(body)))

        limiter.failed = failed  # type: ignore[method-assign]

    def _enqueue(self, item: _Outgoing) -> None:
        self._queued += 1
        self._outbox.put_nowait(item)

    async def published(self) -> None:
        """Return once everything queued before this call is committed in
        PostgreSQL (or given up on: the node is then stopping). A response that
        waits for it never acknowledges an event that a SIGKILL could still lose."""
        target = self._queued
        if self._settled >= target:
            return
        async with self._settle:
            await self._settle.wait_for(lambda: self._settled >= target)

    # ------------------------------------------------------------ the tasks

    async def _publish(self) -> None:
        """Send the outbox in order, as many as are waiting per transaction."""
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            try:
                await self._send(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("cannot publish %d events: %s", len(batch), _one_line(exc))
                self._lost()
            finally:
                for _ in batch:
                    self._outbox.task_done()
                self._settled += len(batch)
                async with self._settle:
                    self._settle.notify_all()

    async def _send(self, batch: list[_Outgoing]) -> None:
        conn = self._work
        if conn is None:
            raise ClusterError("not connected")
        async with self._work_lock, conn.transaction():
            payloads: list[str] = []
            for item in batch:
                if item.effect is not None:
                    await conn.execute(item.effect[0], item.effect[1])
                text = item.kind.value + item.body
                if len(text.encode("utf-8")) > MAX_INLINE_BYTES:
                    cursor = await conn.execute(
                        "INSERT INTO concord_cluster_payloads (body) VALUES (%s) RETURNING id",
                        (text,),
                    )
                    row = await cursor.fetchone()
                    assert row is not None
                    text = f"{_Kind.REFERENCE.value}{row[0]}"
                payloads.append(text)
            # One statement, in order: notifications of one transaction keep their order.
            await conn.execute(
                "SELECT pg_notify(%s, x) FROM unnest(%s::text[]) WITH ORDINALITY AS t(x, i) "
                "ORDER BY i",
                (CHANNEL, payloads),
            )

    async def _receive(self) -> None:
        conn = self._listen
        assert conn is not None
        try:
            async for note in conn.notifies():
                await self._handle(note.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("lost the database's notifications: %s", _one_line(exc))
            self._lost()

    async def _handle(self, payload: str) -> None:
        kind, body = payload[:1], payload[1:]
        if kind == _Kind.REFERENCE.value:
            body = await self._fetch(int(body))
            kind, body = body[:1], body[1:]
        if kind == _Kind.EVENT.value:
            self.delivered += 1
            self.hub.broadcast(body)
        elif kind == _Kind.CONTROL.value:
            self._control(json.loads(body))

    async def _fetch(self, payload_id: int) -> str:
        conn = self._work
        assert conn is not None
        async with self._work_lock:
            cursor = await conn.execute(
                "SELECT body FROM concord_cluster_payloads WHERE id = %s", (payload_id,)
            )
            row = await cursor.fetchone()
        return str(row[0]) if row else "C{}"

    def _control(self, message: dict[str, Any]) -> None:
        kind = message.get("k")
        if kind == "presence":
            self._apply_presence(int(message["n"]), int(message["u"]), bool(message["on"]))
        elif kind == "close":
            close_local(self.hub, int(message["u"]), int(message["code"]), str(message["reason"]))
        elif kind == "login" and message.get("n") != self.node_id:
            record = self._limiters.get(str(message.get("l")))
            if record is not None:
                record(str(message["key"]))

    def _apply_presence(self, node: int, user: int, on: bool) -> None:
        nodes = self._where.setdefault(user, set())
        was_online = bool(nodes)
        (nodes.add if on else nodes.discard)(node)
        if not nodes:
            del self._where[user]
        self._announce_change(user, was_online)

    def _announce_change(self, user: int, was_online: bool) -> None:
        now_online = user in self._where
        if now_online == was_online:
            return
        if now_online:
            self.online.add(user)
        else:
            self.online.discard(user)
        self.hub.broadcast(status_frame(user, "ONLINE" if now_online else "OFFLINE"))

    async def _watch(self) -> None:
        """Notice dead nodes (their lock is gone): drop their presence, tidy up."""
        rounds = 0
        while True:
            await asyncio.sleep(self.watch_interval)
            try:
                live = await self._query_live_nodes()
                rounds += 1
                dead = self._known_nodes() - live
                if dead:
                    self.forget_nodes(dead)
                    async with self._work_lock:
                        assert self._work is not None
                        await self._work.execute(
                            "DELETE FROM concord_cluster_presence WHERE node_id = ANY(%s)",
                            (list(dead),),
                        )
                if rounds % 120 == 0:
                    async with self._work_lock:
                        assert self._work is not None
                        await self._work.execute(
                            "DELETE FROM concord_cluster_payloads "
                            "WHERE created_at < now() - make_interval(secs => %s)",
                            (PAYLOAD_TTL_SECONDS,),
                        )
                self._live_nodes = live
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot check the other nodes: %s", _one_line(exc))

    def _known_nodes(self) -> set[int]:
        known: set[int] = set()
        for nodes in self._where.values():
            known |= nodes
        known.discard(self.node_id)
        return known

    def forget_nodes(self, dead: Iterable[int]) -> None:
        """Nodes that died: their users are offline unless another node has them."""
        dead = set(dead)
        for user in list(self._where):
            nodes = self._where[user]
            if nodes & dead:
                was_online = bool(nodes)
                nodes -= dead
                if not nodes:
                    del self._where[user]
                self._announce_change(user, was_online)
        log.info("nodes %s are gone", sorted(dead))

    async def _query_live_nodes(self, conn: psycopg.AsyncConnection[Any] | None = None) -> set[int]:
        if conn is not None:
            cursor = await conn.execute(_LIVE_NODES, (LOCK_CLASS,))
            return {int(row[0]) for row in await cursor.fetchall()}
        async with self._work_lock:
            assert self._work is not None
            cursor = await self._work.execute(_LIVE_NODES, (LOCK_CLASS,))
            return {int(row[0]) for row in await cursor.fetchall()}

    def _lost(self) -> None:
        if self.on_lost is not None:
            self.on_lost()

    # ------------------------------------------------------------ shared key

    async def signing_key_pem(self, make: Callable[[], bytes]) -> bytes:
        """The server's signing key (PEM), the same on every node: the stored one,
        or ``make()``'s, stored by whichever node starts first."""
        conn = self._work
        assert conn is not None
        async with self._work_lock:
            cursor = await conn.execute("SELECT pem FROM concord_cluster_key WHERE id = 1")
            row = await cursor.fetchone()
            if row is None:
                pem = await asyncio.to_thread(make)
                await conn.execute(
                    "INSERT INTO concord_cluster_key (id, pem) VALUES (1, %s) "
                    "ON CONFLICT DO NOTHING",
                    (pem.decode("ascii"),),
                )
                cursor = await conn.execute("SELECT pem FROM concord_cluster_key WHERE id = 1")
                row = await cursor.fetchone()
                assert row is not None
        return str(row[0]).encode("ascii")


async def tell_nodes_to_close(url: str, user_id: int, reason: str) -> None:
    """From outside the nodes (``serve --reset-admin-password``): every running
    node closes the user's sockets with 4001."""
    import psycopg

    body = {"k": "close", "u": user_id, "code": 4001, "reason": reason}
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(
                "SELECT pg_notify(%s, %s)", (CHANNEL, _Kind.CONTROL.value + json.dumps(body))
            )
    except psycopg.Error as exc:
        log.warning("could not tell the nodes: %s", _one_line(exc))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
