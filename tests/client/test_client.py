"""The Client facade: settings, name resolution, caches, paging, the sync facade."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

import concordctl.sync as concord_sync
from concordctl import Client, NotAuthenticated, NotFound, StreamState, UsageError
from concordctl.config import save_profile
from concordctl.server import EmbeddedServer, ServerThread
from tests.helpers.timing import UNIT, async_wait_until


async def test_client_resolves_settings_like_the_cli(
    server: EmbeddedServer,
    admin_password: str,
    monkeypatch: pytest.MonkeyPatch,
    isolated_settings: Path,
) -> None:
    monkeypatch.setenv("CONCORD_SERVER", server.url)
    monkeypatch.setenv("CONCORD_USERNAME", "admin")
    monkeypatch.setenv("CONCORD_PASSWORD", admin_password)
    async with Client() as c:
        token = c.token  # logged in on entering
        assert token and (await c.me()).username == "admin"
    monkeypatch.setenv("CONCORD_PASSWORD", "wrong-password")
    async with Client() as c:  # bad credentials do not stop what needs none
        assert (await c.register("needs-no-login", "some-password")).username
        with pytest.raises(NotAuthenticated):
            await c.me()
    monkeypatch.delenv("CONCORD_SERVER")
    monkeypatch.delenv("CONCORD_USERNAME")
    monkeypatch.delenv("CONCORD_PASSWORD")
    save_profile("ci", path=isolated_settings, server=server.url, username="admin", token=token)
    async with Client(profile="ci") as c:
        assert c.settings.profile == "ci" and c.token == token
        assert (await c.me()).username == "admin"
    with pytest.raises(UsageError, match="no Concord server"):
        Client(profile="nonexistent")


async def test_channel_and_user_name_resolution(client: Client) -> None:
    general = await client.channel("general")
    assert (await client.channel("#general")).id == general.id
    assert (await client.channel(general.id)).name == "general"
    assert (await client.channel(str(general.id))).name == "general"
    assert (await client.channel("GENERAL")).id == general.id  # unique case-insensitive match
    child = await client.create_channel("#deploys", "CI output", general.id)
    assert child.name == "deploys" and child.parent_channel_id == general.id
    assert (await client.channel("deploys")).parent_channel_id == general.id  # flattened tree
    with pytest.raises(NotFound) as info:
        await client.channel("#deploy")
    assert info.value.suggestions == ["deploys"] and info.value.exit_code == 4
    assert "did you mean deploys" in str(info.value)
    with pytest.raises(NotFound) as info:
        await client.channel("zzzzzz")
    assert info.value.suggestions == []

    me = await client.user("admin")
    assert (await client.user("@admin")).id == me.id
    assert (await client.user(me.id)).username == "admin"
    with pytest.raises(NotFound) as info:
        await client.user("admn")
    assert info.value.suggestions == ["admin"]

    await client.delete_channel("deploys")
    with pytest.raises(NotFound):
        await client.channel("deploys")


async def test_names_are_cached(client: Client, sender: Client) -> None:
    chat = await sender.send_chat("general", "who am i")
    calls: list[str] = []
    original = client.rest._http.request

    async def counting(method: str, url: str, **kw: object) -> object:
        calls.append(f"{method} {url}")
        return await original(method, url, **kw)  # type: ignore[arg-type]

    client.rest._http.request = counting  # type: ignore[method-assign]
    name = await client.user_name(chat.author_id)
    channel = await client.channel_name(chat.channel_id)
    assert (name, channel) == (sender.settings.username, "general")
    n = len(calls)
    for _ in range(3):
        assert await client.user_name(chat.author_id) == name
        assert await client.channel_name(chat.channel_id) == "general"
        await client.send_chat("general", "by name")  # the name -> id lookup is cached too
    assert [c for c in calls[n:] if not c.startswith("POST")] == []
    assert await client.user_name(424242) == "424242"  # unknown: the id, no error


async def test_chats_history_search_and_reactions(client: Client, sender: Client) -> None:
    sent = [await sender.send_chat("general", f"build {i} ok") for i in range(7)]
    await client.send_chat("general", "unrelated")
    latest = await client.latest_chats("#general", limit=3)
    assert [c.content for c in latest] == ["unrelated", "build 6 ok", "build 5 ok"]
    # Paging: a page size smaller than the limit still gives `limit` results.
    found = await client.search_chats("build", channel="general", limit=5, page_size=2)
    assert [c.id for c in found] == [c.id for c in reversed(sent)][:5]
    by_author = await client.search_chats(author=sender.settings.username or "", limit=100)
    assert len(by_author) == 7
    chat = sent[0]
    await client.react(chat.id, "🚀")
    assert (await client.reactions(chat.id)).reactions == {"🚀": 1}
    await client.unreact(chat.id, "🚀")
    assert (await client.reactions(chat.id)).reactions == {}
    assert (await client.get_chat(chat.id)).content == "build 0 ok"
    info = await client.server_info()
    assert info.default_channel_id == (await client.channel("general")).id
    registered = await client.register("fresh-user", "fresh-password")
    assert registered.username == "fresh-user"


async def test_leaving_the_client_closes_its_streams(client: Client) -> None:
    states: list[str] = []

    def on_state(s: StreamState) -> None:
        states.append(s.state)

    stream = client.events(on_state=on_state)

    async def run() -> None:
        async for _ in stream:
            pass

    task = asyncio.create_task(run())
    await async_wait_until(lambda: stream.connected, 5 * UNIT, "connected")
    await client.aclose()
    async with asyncio.timeout(5):
        await task  # the iteration ends, it does not hang
    assert states[-1] == "closed"


def test_sync_facade(server_thread: ServerThread, admin_password: str) -> None:
    kwargs: dict[str, object] = {
        "server": server_thread.url,
        "username": "admin",
        "password": admin_password,
    }
    chat = concord_sync.send_chat("#general", "from a script", **kwargs)
    assert chat.content == "from a script"
    assert concord_sync.latest_chats("general", 1, **kwargs)[0].id == chat.id
    assert concord_sync.edit_chat(chat.id, "edited", **kwargs).edited
    concord_sync.react(chat.id, "👍", **kwargs)
    assert concord_sync.me(**kwargs).username == "admin"
    assert any(c.name == "general" for c in concord_sync.channels(**kwargs))


async def test_sync_facade_refuses_a_running_loop() -> None:
    fn: Callable[..., object] = concord_sync.me
    with pytest.raises(RuntimeError, match="inside an event loop"):
        fn(server="http://127.0.0.1:9")
