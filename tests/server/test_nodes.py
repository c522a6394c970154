"""Several nodes on one PostgreSQL database behave as one server (``server/cluster.py``).

Nodes run in this process on port 0, each with its own hub, sockets and
limiters; the only thing they share is the database (and its NOTIFY channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from concordctl.server import EmbeddedServer, ServerConfig
from concordctl.server.cluster import MAX_INLINE_BYTES
from concordctl.server.runner import StartError
from tests.helpers.timing import UNIT, async_wait_until
from tests.server.helpers import (
    User,
    Watcher,
    login,
    register_and_login,
    running_nodes,
    watch,
)

NodeFactory = Callable[..., "contextlib.AbstractAsyncContextManager[list[EmbeddedServer]]"]


def node_config(postgres_url: str, tmp_path: Path, password: str, **extra: Any) -> ServerConfig:
    """One node's settings: everything in the one PostgreSQL database."""
    return ServerConfig(
        db_path=postgres_url,
        admin_password=password,
        online_delay=0.05,
        **extra,
    )


@pytest.fixture
def nodes(postgres_url: str, tmp_path: Path, admin_password: str) -> NodeFactory:
    """``async with nodes(3) as servers:`` three running nodes of one server."""

    @contextlib.asynccontextmanager
    async def start(count: int, **extra: Any) -> AsyncIterator[list[EmbeddedServer]]:
        config = node_config(postgres_url, tmp_path, admin_password, **extra)
        async with running_nodes([config] * count) as servers:
            yield servers

    return start


@contextlib.asynccontextmanager
async def clients(servers: list[EmbeddedServer]) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(httpx.AsyncClient(base_url=s.url)) for s in servers]


async def _status_of(watcher: Watcher, user_id: int, timeout: float) -> str:  # noqa: ASYNC109
    """The next presence change of ``user_id`` seen by ``watcher``."""
    while True:
        frame = await watcher.next("user_status_updated", timeout=timeout)
        if frame["userId"] == user_id:
            value: str = frame["status"]
            return value


async def _chats(watcher: Watcher, count: int) -> list[dict[str, Any]]:
    seen = []
    while len(seen) < count:
        frame = await watcher.next("chat_sent", timeout=20 * UNIT)
        seen.append(frame["chat"])
    return seen


async def test_every_client_on_every_node_gets_every_chat_once_in_one_order(
    nodes: NodeFactory, admin_password: str
) -> None:
    per_sender = 25
    async with nodes(3) as servers, clients(servers) as https:
        admins = [await login(h, "admin", admin_password) for h in https]
        channel = (await admins[0].get("/api/server")).json()["defaultChannelId"]
        senders = [await register_and_login(h, f"sender{i}") for i, h in enumerate(https)]
        async with contextlib.AsyncExitStack() as stack:
            watchers = [
                await stack.enter_async_context(watch(server, admins[i].token))
                for i, server in enumerate(servers)
                for _ in range(2)
            ]
            total = per_sender * len(senders) * 2  # REST and websocket frames

            async def send_all(index: int, sender: User) -> list[int]:
                ids = []
                for n in range(per_sender):
                    ids.append((await sender.send(channel, f"rest {index}-{n}"))["id"])
                return ids

            async with watch(servers[1], senders[1].token) as frames_from:
                for n in range(per_sender * len(senders)):
                    await frames_from.send(
                        {"type": "chat_written", "channelId": channel, "content": f"ws {n}"}
                    )
                rest_ids = await asyncio.gather(*(send_all(i, s) for i, s in enumerate(senders)))
                received = await asyncio.gather(*(_chats(w, total) for w in watchers))
                # Exactly once: nothing more comes after the expected count.
                for watcher in watchers:
                    with pytest.raises(TimeoutError):
                        await watcher.next("chat_sent", timeout=0.3 * UNIT)
        orders = [[chat["id"] for chat in got] for got in received]
        assert all(len(set(order)) == total for order in orders)  # no duplicate
        assert all(order == orders[0] for order in orders)  # one order for everyone
        for ids in rest_ids:  # each sender's chats in the order it sent them
            positions = [orders[0].index(i) for i in ids]
            assert positions == sorted(positions)
        contents = [chat["content"] for chat in received[0] if chat["content"].startswith("ws")]
        assert contents == [f"ws {n}" for n in range(per_sender * len(senders))]
        history = await admins[2].get(
            f"/api/channels/{channel}/chats/latest", params={"size": total}
        )
        assert {c["id"] for c in history.json()} == set(orders[0])


async def test_nodes_take_distinct_ids_and_put_them_in_snowflakes(
    nodes: NodeFactory, admin_password: str
) -> None:
    async with nodes(3) as servers, clients(servers) as https:
        assert sorted(s.node_id for s in servers if s.node_id is not None) == [0, 1, 2]
        admin_users = [await login(h, "admin", admin_password) for h in https]
        channel = (await admin_users[0].get("/api/server")).json()["defaultChannelId"]
        for server, user in zip(servers, admin_users, strict=True):
            chats = [await user.send(channel, f"from {server.node_id}") for _ in range(50)]
            assert all((c["id"] >> 12) & 1023 == server.node_id for c in chats)
            ids = [c["id"] for c in chats]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_nodes_started_at_once_on_a_new_database_seed_it_once(
    nodes: NodeFactory, admin_password: str
) -> None:
    # All three start together (running_nodes): each may find the database
    # unseeded, one seeds it, the others find it seeded and start all the same.
    async with nodes(3) as servers, clients(servers) as https:
        assert all(s.running for s in servers)
        assert sum(s.admin_password is not None for s in servers) == 1  # one seeded
        admin = await login(https[2], "admin", admin_password)
        users = (await admin.get("/api/users")).json()
        assert [u["username"] for u in users] == ["admin"]
        channels = (await admin.get("/api/channels")).json()
        assert [c["name"] for c in channels] == ["general"]


async def test_a_taken_node_id_fails_before_anything_is_created(
    postgres_url: str, tmp_path: Path, admin_password: str
) -> None:
    first = EmbeddedServer(node_config(postgres_url, tmp_path, admin_password, node_id=7))
    async with first:
        assert first.node_id == 7
        second = EmbeddedServer(node_config(postgres_url, tmp_path, "other", node_id=7))
        with pytest.raises(StartError, match="node id 7 is taken"):
            await second.start()
        assert second.admin_password is None and not second.running
    # Released with the node: the number is free again.
    async with EmbeddedServer(node_config(postgres_url, tmp_path, "x", node_id=7)) as again:
        assert again.node_id == 7


async def test_presence_is_online_while_any_node_has_a_socket(
    nodes: NodeFactory, admin_password: str
) -> None:
    async with nodes(3) as servers, clients(servers) as https:
        admin = await login(https[0], "admin", admin_password)
        alice = [await login(h, "admin", admin_password) for h in https[1:]]
        bob = await register_and_login(https[2], "bob")
        bob_on_1 = User(https[1], bob.token, "bob")

        async def status(user: User) -> str:
            got = await user.get(f"/api/users/{bob.id}")
            value: str = got.json()["status"]["onlineStatus"]
            return value

        async with watch(servers[0], admin.token) as observer:
            async with watch(servers[1], bob.token):
                assert await _status_of(observer, bob.id, 5 * UNIT) == "ONLINE"
                for user in alice:
                    assert await status(user) == "ONLINE"
                async with watch(servers[2], bob.token):
                    cluster = servers[0].cluster
                    assert cluster is not None
                    both = {servers[1].node_id, servers[2].node_id}
                    await async_wait_until(
                        lambda: cluster.nodes_of(bob.id) == both, 5 * UNIT, "bob on two nodes"
                    )
                # Still on node 1: nobody hears OFFLINE.
                with pytest.raises(TimeoutError):
                    await _status_of(observer, bob.id, 0.5 * UNIT)
                assert await status(bob_on_1) == "ONLINE"
            assert await _status_of(observer, bob.id, 5 * UNIT) == "OFFLINE"
            for user in alice:
                assert await status(user) == "OFFLINE"


async def test_a_node_started_later_knows_who_is_online(
    postgres_url: str, tmp_path: Path, admin_password: str
) -> None:
    async with (
        EmbeddedServer(node_config(postgres_url, tmp_path, admin_password)) as first,
        httpx.AsyncClient(base_url=first.url) as http,
    ):
        bob = await register_and_login(http, "bob")
        async with watch(first, bob.token):
            await async_wait_until(lambda: bob.id in first.state.presence.online, 5 * UNIT)
            config = node_config(postgres_url, tmp_path, admin_password)
            async with EmbeddedServer(config) as late:
                assert bob.id in late.state.presence.online


async def test_login_limits_and_the_signing_key_are_shared(
    nodes: NodeFactory, admin_password: str
) -> None:
    async with nodes(2, login_failures_per_user=3) as servers, clients(servers) as https:
        await register_and_login(https[0], "carol", "right")
        for _ in range(3):
            wrong = await https[0].post(
                "/api/tokens", json={"username": "carol", "password": "wrong"}
            )
            assert wrong.status_code == 400

        async def locked_out_on_second() -> bool:
            got = await https[1].post(
                "/api/tokens", json={"username": "carol", "password": "wrong"}
            )
            return got.status_code == 429

        await async_wait_until(locked_out_on_second, 5 * UNIT, "the limit on the other node")
        # A token from one node is good on the other: one signing key.
        admin = await login(https[0], "admin", admin_password)
        on_other = await https[1].get("/api/self", headers=admin.headers)
        assert on_other.status_code == 200 and on_other.json()["username"] == "admin"


async def test_closing_a_users_sockets_reaches_every_node(
    nodes: NodeFactory, admin_password: str
) -> None:
    async with nodes(3) as servers, clients(servers) as https:
        dave = await register_and_login(https[0], "dave")
        other = await register_and_login(https[0], "erin")
        async with (
            watch(servers[1], dave.token) as on_1,
            watch(servers[2], dave.token) as on_2,
            watch(servers[2], other.token) as bystander,
        ):
            await async_wait_until(
                lambda: all(dave.id in s.state.presence.online for s in servers), 5 * UNIT
            )
            servers[0].state.fanout.close_user(dave.id, 4001, "token revoked")
            for closed in (on_1.closed, on_2.closed):
                assert await asyncio.wait_for(closed, 5 * UNIT) == (4001, "token revoked")
            assert not bystander.closed.done()


async def test_a_frame_over_the_notify_limit_goes_by_reference(
    nodes: NodeFactory, admin_password: str
) -> None:
    async with nodes(2) as servers, clients(servers) as https:
        admin = await login(https[0], "admin", admin_password)
        channel = (await admin.get("/api/server")).json()["defaultChannelId"]
        reader = await login(https[1], "admin", admin_password)
        big = "🦆" * 3000  # 12,000 bytes of UTF-8
        assert len(big.encode()) > MAX_INLINE_BYTES
        async with watch(servers[1], reader.token) as far:
            await admin.send(channel, "small before")
            sent = await admin.send(channel, big)
            await admin.send(channel, "small after")
            got = [(await far.next("chat_sent", timeout=5 * UNIT))["chat"] for _ in range(3)]
        assert [c["content"] for c in got] == ["small before", big, "small after"]
        assert got[1]["id"] == sent["id"]


async def test_events_of_every_kind_cross_nodes(nodes: NodeFactory, admin_password: str) -> None:
    async with nodes(2) as servers, clients(servers) as https:
        admin = await login(https[0], "admin", admin_password)
        channel = (await admin.get("/api/server")).json()["defaultChannelId"]
        far_user = await login(https[1], "admin", admin_password)
        async with watch(servers[1], far_user.token) as far:
            chat = await admin.send(channel, "to be edited")
            await admin.patch(f"/api/chats/{chat['id']}", json={"content": "edited"})
            await admin.post(
                f"/api/chats/{chat['id']}/reactions", json={"reaction": "👍", "adding": True}
            )
            await admin.delete(f"/api/chats/{chat['id']}")
            await register_and_login(https[0], "frank")
            kinds = []
            while len(kinds) < 5:
                frame = await far.next(timeout=5 * UNIT)
                if frame["type"] != "user_status_updated":
                    kinds.append(frame["type"])
        assert kinds == [
            "chat_sent",
            "chat_edited",
            "chat_reactions_updated",
            "chat_deleted",
            "user_joined",
        ], json.dumps(kinds)


def test_ids_carry_the_node_and_stay_increasing_when_a_millisecond_runs_out() -> None:
    from concordctl.ids import SnowflakeGenerator

    gen = SnowflakeGenerator(node_id=5)
    ids = [gen.next_id() for _ in range(10_000)]  # more than 4096 in a millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all((i >> 12) & 1023 == 5 for i in ids)
    other = SnowflakeGenerator(floor=ids[-1], node_id=3)  # another node's id is the floor
    later = other.next_id()
    assert later > ids[-1] and (later >> 12) & 1023 == 3


async def test_reset_admin_password_next_to_live_nodes_closes_admins_sockets(
    nodes: NodeFactory, admin_password: str
) -> None:
    from concordctl.server.runner import reset_admin_password

    async with nodes(2) as servers, clients(servers) as https:
        admin = await login(https[1], "admin", admin_password)
        async with watch(servers[1], admin.token) as socket:
            new = await reset_admin_password(servers[0].config)
            code, _ = await asyncio.wait_for(socket.closed, 5 * UNIT)
            assert code == 4001
        assert (await https[1].get("/api/self", headers=admin.headers)).status_code == 401
        assert (await login(https[0], "admin", new)).token


async def test_a_node_that_loses_its_database_stops_and_says_why(
    postgres_url: str, tmp_path: Path, admin_password: str
) -> None:
    import psycopg

    server = EmbeddedServer(node_config(postgres_url, tmp_path, admin_password))
    async with server:
        cluster = server.cluster
        assert cluster is not None and cluster._listen is not None
        pid = cluster._listen.info.backend_pid
        stop = asyncio.Event()
        serving = asyncio.create_task(server.serve_until(stop))
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await asyncio.wait_for(serving, 10 * UNIT)  # returns without stop being set
        assert not stop.is_set()
        assert (
            server.failure is not None and "lost the connection to the database" in server.failure
        )


async def test_logout_on_one_node_ends_the_session_on_every_node(
    nodes: NodeFactory, admin_password: str
) -> None:
    async with nodes(3) as servers, clients(servers) as https:
        grace = await register_and_login(https[0], "grace")
        async with watch(servers[1], grace.token) as on_1:
            assert (await grace.delete("/api/tokens")).status_code == 200
            code, _ = await asyncio.wait_for(on_1.closed, 5 * UNIT)
            assert code == 4001
        refused = await https[2].get("/api/self", headers=grace.headers)
        assert refused.status_code == 401
