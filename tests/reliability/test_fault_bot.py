"""A running concordctl.Bot through a misbehaving network: its handlers see
every chat sent meanwhile exactly once and in order, a command sent during
the outage is still answered, the loss is logged ("reconnecting"), and a
silent socket is noticed within the keepalive bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from faultproxy import FaultProxy
from streamcheck import DEAD_SOCKET_BOUND, FAST, REST_TIMEOUT, Sender, poll_until

from concordctl import Bot, ChatSent, Client
from concordctl.server import EmbeddedServer
from tests.helpers.timing import UNIT, async_wait_until


class RunningBot:
    def __init__(self, bot: Bot, task: asyncio.Task[None]) -> None:
        self.bot = bot
        self.task = task
        self.seen: list[ChatSent] = []
        self.changed = asyncio.Event()

    async def wait_for(self, chats: list[Any], within: float) -> None:
        wanted = {c.id for c in chats}
        try:
            async with asyncio.timeout(within):
                while not wanted <= {e.chat.id for e in self.seen}:
                    assert not self.task.done(), f"the bot stopped: {self.task!r}"
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            missing = wanted - {e.chat.id for e in self.seen}
            raise AssertionError(f"the bot's handler missed {len(missing)} chats") from None


@pytest.fixture
async def running_bot(server: EmbeddedServer, proxy: FaultProxy) -> AsyncIterator[RunningBot]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(
            "/api/users/register", json={"username": "faultbot", "password": "faultbot-pw-1"}
        )
        response.raise_for_status()
    bot = Bot(prefix="!", watchdog=None)
    holder: list[RunningBot] = []

    @bot.on("chat_sent", channel="general")
    async def record(event: ChatSent) -> None:
        holder[0].seen.append(event)
        holder[0].changed.set()

    @bot.command("ping")
    async def ping(ctx: Any) -> None:
        await ctx.reply(f"pong {ctx.chat.id}")

    client = Client(
        proxy.url,
        username="faultbot",
        password="faultbot-pw-1",
        config_path="/nonexistent",
        timeout=REST_TIMEOUT,
        stream_options=FAST,
    )
    async with client:
        task = asyncio.get_running_loop().create_task(bot.serve(client))
        running = RunningBot(bot, task)
        holder.append(running)
        async with asyncio.timeout(15):
            await bot.wait_ready()
        yield running
        bot.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(15):
                await task
        if not task.done():
            task.cancel()


def _assert_once_in_order(bot: RunningBot, sent: list[Any]) -> None:
    ids = {c.id for c in sent}
    got = [e.chat.id for e in bot.seen if e.chat.id in ids]
    assert got == [c.id for c in sent], "the handler saw chats missing, twice or out of order"


async def test_bot_recovers_chats_and_answers_commands_sent_during_an_outage(
    running_bot: RunningBot, proxy: FaultProxy, sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    live = await sender.send_many("live", 2)
    await running_bot.wait_for(live, 10)

    await proxy.refuse(1.0)
    await proxy.cut()
    missed = await sender.send_many("missed", 5)
    command = await sender.send("!ping")
    missed.append(command)
    await running_bot.wait_for(missed, 15)
    after = await sender.send_many("after", 2)
    await running_bot.wait_for(after, 10)

    _assert_once_in_order(running_bot, sender.sent)
    assert [e.recovered for e in running_bot.seen if e.chat.id == command.id] == [True]

    # The command sent while the bot was away got its answer, once.
    async def pongs(chat_id: int) -> int:
        chats = (await sender.http.get("/api/chats", params={"query": "pong"})).json()
        return sum(c["content"] == f"pong {chat_id}" for c in chats)

    await async_wait_until(lambda: pongs(command.id), 10 * UNIT, what="the answer")
    # A second answer would come before the answer to a later command (lanes keep order).
    witness = await sender.send("!ping")
    await async_wait_until(lambda: pongs(witness.id), 10 * UNIT, what="the later answer")
    assert await pongs(command.id) == 1
    assert "reconnecting" in caplog.text
    assert not running_bot.task.done()


async def test_bot_notices_a_silent_socket_and_recovers(
    running_bot: RunningBot, proxy: FaultProxy, sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await running_bot.wait_for(await sender.send_many("live", 1), 10)
    stalled_at = time.monotonic()
    proxy.stall(existing_only=True)
    missed = await sender.send_many("stalled", 3)
    await poll_until(lambda: "reconnecting" in caplog.text, DEAD_SOCKET_BOUND + 5, "noticing")
    assert time.monotonic() - stalled_at <= DEAD_SOCKET_BOUND
    await running_bot.wait_for(missed, 2 * REST_TIMEOUT + DEAD_SOCKET_BOUND)
    await running_bot.wait_for(await sender.send_many("after", 2), 10)
    _assert_once_in_order(running_bot, sender.sent)


async def test_bot_survives_a_server_restart(
    running_bot: RunningBot, server: EmbeddedServer, sender: Sender
) -> None:
    await running_bot.wait_for(await sender.send_many("live", 2), 10)
    await server.restart()
    restarted = await sender.send_many("restarted", 3)
    await running_bot.wait_for(restarted, 15)
    server.refuse_connections(1.0)
    await server.drop_connections()
    dropped = await sender.send_many("dropped", 3)
    await running_bot.wait_for(dropped, 15)
    _assert_once_in_order(running_bot, sender.sent)
