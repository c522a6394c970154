"""The websocket: events for every action, client frames, handshakes, fault hooks."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from concordctl.protocol import decode_event
from concordctl.server import EmbeddedServer
from tests.server.helpers import User, Watcher, general_id, login, register_and_login, watch


async def both(a: Watcher, b: Watcher, type: str) -> dict[str, object]:
    """The next ``type`` frame, which both watchers must receive identically."""
    first, second = await asyncio.gather(a.next(type), b.next(type))
    assert first == second
    decode_event(json.dumps(first))  # every frame is of the contract
    return first


async def test_every_rest_action_reaches_every_client(
    server: EmbeddedServer, http: httpx.AsyncClient, admin: User
) -> None:
    general = await general_id(admin)
    async with watch(server, admin.token) as a, watch(server, admin.token) as b:
        bob = await register_and_login(http, "bob")
        assert (await both(a, b, "user_joined"))["userId"] == bob.id

        chat = await bob.send(general, "hello")
        assert (await both(a, b, "chat_sent"))["chat"] == chat

        await bob.patch(f"/api/chats/{chat['id']}", json={"content": "hello!"})
        assert await both(a, b, "chat_edited") == {
            "type": "chat_edited",
            "chatId": chat["id"],
            "channelId": general,
            "threadId": None,
            "content": "hello!",
        }

        await admin.post(
            f"/api/chats/{chat['id']}/reactions", json={"reaction": "🎉", "adding": True}
        )
        event = await both(a, b, "chat_reactions_updated")
        assert event["reactions"] == {"🎉": 1} and event["chatId"] == chat["id"]

        await bob.delete(f"/api/chats/{chat['id']}")
        assert (await both(a, b, "chat_deleted"))["chatId"] == chat["id"]

        channel = (await admin.post("/api/channels", json={"name": "news"})).json()
        assert (await both(a, b, "channel_created"))["channel"] == channel

        edited = await admin.patch(f"/api/channels/{channel['id']}", json={"name": "news2"})
        assert (await both(a, b, "channels_updated"))["channel"] == edited.json()
        assert edited.json()["name"] == "news2"

        await admin.delete(f"/api/channels/{channel['id']}")
        assert (await both(a, b, "channel_deleted"))["channelId"] == channel["id"]


async def test_online_after_connect_offline_after_disconnect(
    server: EmbeddedServer, http: httpx.AsyncClient, admin: User
) -> None:
    bob = await register_and_login(http, "bob")
    async with watch(server, admin.token) as a:
        async with watch(server, bob.token):
            event = await a.next("user_status_updated")
            assert event["userId"] in {admin.id, bob.id} and event["status"] == "ONLINE"
            statuses = {event["userId"]}
            statuses.add((await a.next("user_status_updated"))["userId"])
            assert statuses == {admin.id, bob.id}
            me = (await bob.get("/api/self")).json()
            assert me["status"]["onlineStatus"] == "ONLINE"
        gone = await a.next("user_status_updated")
        assert gone == {"type": "user_status_updated", "userId": bob.id, "status": "OFFLINE"}
    assert (await bob.get("/api/self")).json()["status"]["onlineStatus"] == "OFFLINE"


async def test_client_frames(server: EmbeddedServer, http: httpx.AsyncClient, admin: User) -> None:
    general = await general_id(admin)
    bob = await register_and_login(http, "bob")
    async with watch(server, bob.token) as a, watch(server, admin.token) as b:
        await a.send({"type": "chat_typing", "channelId": general, "threadId": None, "sentAt": 5})
        assert await both(a, b, "chat_typing") == {
            "type": "chat_typing",
            "userId": bob.id,
            "channelId": general,
            "threadId": None,
            "sentAt": 5,
        }
        await a.send({"type": "chat_typing", "channelId": general, "threadId": None})
        assert (await both(a, b, "chat_typing"))["sentAt"] > 0  # stamped, not 0 as upstream

        await a.send(
            {"type": "chat_written", "channelId": general, "threadId": None, "content": "w"}
        )
        sent = (await both(a, b, "chat_sent"))["chat"]
        assert isinstance(sent, dict)
        assert sent["content"] == "w" and sent["authorId"] == bob.id and sent["createdAt"] > 0
        stored = (await admin.get(f"/api/chats/{sent['id']}")).json()
        assert stored == sent

        await a.send(
            {"type": "chat_reaction", "chatId": sent["id"], "reaction": "👀", "adding": True}
        )
        assert (await both(a, b, "chat_reactions_updated"))["reactions"] == {"👀": 1}
        reactions = (await admin.get(f"/api/chats/{sent['id']}/reactions")).json()
        assert reactions["reactingUsers"] == {"👀": [bob.id]}


async def test_malformed_and_failing_frames_are_ignored(
    server: EmbeddedServer, admin: User
) -> None:
    general = await general_id(admin)
    async with watch(server, admin.token) as a:
        for junk in [
            "not json",
            "[1, 2]",
            '{"type": 7}',
            '{"type": "heartbeat"}',
            '{"type": "chat_written", "channelId": "x"}',
            json.dumps({"type": "chat_written", "channelId": 99, "threadId": None, "content": "x"}),
            json.dumps({"type": "chat_written", "channelId": -5, "threadId": None, "content": "x"}),
            json.dumps({"type": "chat_written", "channelId": general, "content": ""}),
            json.dumps({"type": "chat_reaction", "chatId": 99, "reaction": "x", "adding": True}),
            json.dumps({"type": "chat_reaction", "chatId": 2**64, "reaction": "x"}),
            "{" * 10000,
        ]:
            await a.send(junk)
        await a.ws.send(b"\xff\xfe binary")
        await a.send(
            {"type": "chat_written", "channelId": general, "threadId": None, "content": "ok"}
        )
        assert (await a.next("chat_sent"))["chat"]["content"] == "ok"
        assert a.frames.empty() or all(
            f["type"] == "user_status_updated"
            for f in list(a.frames._queue)  # type: ignore[attr-defined]
        )


async def test_handshake_failures(server: EmbeddedServer, admin: User) -> None:
    expired = server.state.signer.issue("admin", admin.id, lifetime=-60)
    forged = admin.token[:-4] + ("AAAA" if not admin.token.endswith("AAAA") else "BBBB")
    for query in ["", "?token=", "?token=garbage", f"?token={expired}", f"?token={forged}"]:
        with pytest.raises(websockets.InvalidStatus) as caught:
            async with websockets.connect(server.ws_url + query):
                pass
        assert caught.value.response.status_code == 401, query
    # upstream reads everything after ?token= as the token: it must come last
    async with watch(server, admin.token) as ok:
        assert ok.ws.state.name == "OPEN"


async def test_frame_size_limit_closes_with_1009(server: EmbeddedServer, admin: User) -> None:
    async with watch(server, admin.token) as a:
        await a.send("x" * (server.config.ws_max_message_bytes + 1))
        code, _ = await asyncio.wait_for(a.closed, 5)
        assert code == 1009


async def test_connections_per_user_are_capped(server: EmbeddedServer, admin: User) -> None:
    server.config.max_ws_per_user = 2
    async with watch(server, admin.token), watch(server, admin.token):
        with pytest.raises(websockets.InvalidStatus) as caught:
            async with websockets.connect(f"{server.ws_url}?token={admin.token}"):
                pass
        assert caught.value.response.status_code == 429


async def test_fault_hooks(server: EmbeddedServer, admin: User) -> None:
    async with watch(server, admin.token) as a:
        await server.broadcast_raw(b'{"type": "something_new", "x": 1}')
        assert await a.next("something_new") == {"type": "something_new", "x": 1}
        await server.drop_connections(code=1012)
        code, _ = await asyncio.wait_for(a.closed, 5)
        assert code == 1012
    server.refuse_connections(30)
    with pytest.raises(websockets.InvalidStatus) as caught:
        async with websockets.connect(f"{server.ws_url}?token={admin.token}"):
            pass
    assert caught.value.response.status_code == 503
    server.refuse_connections(0)
    async with watch(server, admin.token) as again:
        await server.restart()
        code, _ = await asyncio.wait_for(again.closed, 5)
        assert code == 1012
    async with watch(server, admin.token) as after_restart:  # same url, same token
        chat = await admin.send(await general_id(admin), "still here")
        assert (await after_restart.next("chat_sent"))["chat"] == chat


async def test_stop_closes_clients_with_1001(admin_password: str) -> None:
    from concordctl.server import ServerConfig

    server = EmbeddedServer(ServerConfig(admin_password=admin_password))
    await server.start()
    async with httpx.AsyncClient(base_url=server.url) as http:
        admin = await login(http, "admin", admin_password)
    async with watch(server, admin.token) as a:
        await server.stop()
        code, reason = await asyncio.wait_for(a.closed, 5)
        assert code == 1001 and reason


async def test_renumbered_siblings_are_announced(server: EmbeddedServer, admin: User) -> None:
    general = await general_id(admin)
    async with watch(server, admin.token) as a:
        first = (await admin.post("/api/channels", json={"name": "first", "ordinality": 0})).json()
        assert (await a.next("channel_created"))["channel"] == first
        moved = await a.next("channels_updated")
        assert moved["channel"]["id"] == general and moved["channel"]["ordinality"] == 1


async def test_binary_and_text_raw_frames(server: EmbeddedServer, admin: User) -> None:
    async with websockets.connect(f"{server.ws_url}?token={admin.token}") as ws:
        await server.broadcast_raw(b"\xff\x00 not utf-8")
        assert await ws.recv() == b"\xff\x00 not utf-8"
        await server.broadcast_raw("not json at all")
        assert await ws.recv() == "not json at all"
        await server.broadcast_raw(b"{}", binary=True)
        assert await ws.recv() == b"{}"
