"""Recovery under fire: several clients, chats sent without pause, and the
network cut, stalled and corrupted again and again while they flow. Every
client must still yield every chat exactly once, in the server's order.

This is where a race between the live stream and the REST recovery after a
reconnect (a chat in both, or in neither) would show. The faults are drawn
from a seeded generator: RELIABILITY_SEED=N explores other sequences.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random

import pytest
from faultproxy import FaultProxy
from streamcheck import FAST, Collector, Sender, assert_exactly_once_in_order, poll_until

from concordctl import Client
from concordctl.server import EmbeddedServer
from tests.helpers.timing import UNIT, async_wait_until

pytestmark = pytest.mark.slow  # a long run: `pytest -m 'not slow'` skips it

CLIENTS = 6
SENDERS = 2
# The chaos lasts until it has bitten enough (every client reconnected this many
# times, this many chats sent), not a fixed time; the timeout only bounds it.
RECONNECTS = 2
CHATS = 60
CHAOS_TIMEOUT = 30 * UNIT
# The bot's run: this many commands with at least this many cuts among them.
COMMANDS = 40
CUTS = 4


async def test_clients_recover_everything_while_the_network_keeps_failing(
    server: EmbeddedServer, proxy: FaultProxy, admin_password: str
) -> None:
    rng = random.Random(int(os.environ.get("RELIABILITY_SEED", "6")))
    senders = [
        await Sender.login(server.url, "admin", admin_password, "general") for _ in range(SENDERS)
    ]
    async with contextlib.AsyncExitStack() as stack:
        collectors = []
        for _ in range(CLIENTS):
            client = await stack.enter_async_context(
                Client(
                    proxy.url,
                    username="admin",
                    password=admin_password,
                    config_path="/nonexistent",
                    timeout=2.0,
                )
            )
            collector = Collector()
            collector.start(
                client.events(on_state=collector.on_state, **FAST, bad_frame_interval=0.05)
            )
            collectors.append(collector)
        for c in collectors:
            await c.wait_for(lambda c=c: "connected" in c.state_names(), 10, "connect")

        stop = asyncio.Event()

        async def send_until_stopped(sender: Sender, name: str) -> None:
            i = 0
            while not stop.is_set():
                await sender.send(f"{name}-{i}")
                i += 1
                await asyncio.sleep(rng.uniform(0, 0.02) * UNIT)  # the scenario: an uneven pace

        async def keep_failing() -> None:
            faults = ["cut", "cut", "refuse", "stall", "drop", "corrupt"]
            while not stop.is_set():
                # The scenario, not a wait: the next fault comes a few tenths of a second on.
                await asyncio.sleep(rng.uniform(0.2, 0.5) * UNIT)
                fault = rng.choice(faults)
                if fault == "cut":
                    await proxy.cut()
                elif fault == "refuse":
                    await proxy.refuse(rng.uniform(0.1, 0.5))
                    await proxy.cut()
                elif fault == "stall":
                    proxy.stall(existing_only=True)
                    await asyncio.sleep(0.3 * UNIT)  # the scenario: a stall that lasts
                    proxy.resume()
                elif fault == "drop":
                    proxy.drop_bytes(rng.randint(1, 30))
                else:
                    proxy.corrupt_bytes(rng.randint(1, 8))

        tasks = [asyncio.create_task(send_until_stopped(s, f"s{n}")) for n, s in enumerate(senders)]
        chaos = asyncio.create_task(keep_failing())

        def bitten_enough() -> bool:
            sent = sum(len(s.sent) for s in senders)
            return sent >= CHATS and all(
                c.state_names().count("reconnecting") >= RECONNECTS for c in collectors
            )

        try:
            await async_wait_until(bitten_enough, CHAOS_TIMEOUT, what="the faults biting")
        finally:
            stop.set()
        await asyncio.gather(*tasks, chaos)
        await proxy.accept_again()
        proxy.resume()

        # The server's order: every chat, as stored (ids ascending).
        sent = sorted((c for s in senders for c in s.sent), key=lambda c: c.id)
        assert len(sent) > 50
        for n, c in enumerate(collectors):
            await c.wait_for(c.has_chats(sent), 30, f"client {n} catching up")
        for c in collectors:
            await c.stop()
            assert c.error is None
            assert_exactly_once_in_order(c, sent)
        reconnects = [c.state_names().count("reconnecting") for c in collectors]
        assert min(reconnects) >= 2, f"the faults did not bite: {reconnects}"
    for s in senders:
        await s.aclose()


async def test_bot_handles_every_command_once_while_the_network_keeps_failing(
    server: EmbeddedServer, proxy: FaultProxy, admin_password: str
) -> None:
    import httpx

    from concordctl import Bot

    rng = random.Random(int(os.environ.get("RELIABILITY_SEED", "6")))
    async with httpx.AsyncClient(base_url=server.url) as http:
        registered = await http.post(
            "/api/users/register", json={"username": "stressbot", "password": "stressbot-pw-1"}
        )
        registered.raise_for_status()
    sender = await Sender.login(server.url, "admin", admin_password, "general")
    bot = Bot(prefix="!", watchdog=None, send_rate=1000, send_burst=1000)
    handled: list[int] = []

    @bot.command("echo")
    async def echo(ctx: object) -> None:
        handled.append(int(ctx.args[0]))  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):  # a reply cut mid-POST is the network's loss
            await ctx.reply(f"echoed {ctx.args[0]}")  # type: ignore[attr-defined]

    client = Client(
        proxy.url,
        username="stressbot",
        password="stressbot-pw-1",
        config_path="/nonexistent",
        timeout=2.0,
        stream_options=FAST | {"bad_frame_interval": 0.05},
    )
    async with client:
        task = asyncio.create_task(bot.serve(client))
        async with asyncio.timeout(15):
            await bot.wait_ready()
        commands = cuts = 0
        while commands < COMMANDS or cuts < CUTS:
            await sender.send(f"!echo {commands}")
            commands += 1
            if rng.random() < 0.08:
                await proxy.cut()
                cuts += 1
            elif rng.random() < 0.04:
                proxy.corrupt_bytes(rng.randint(1, 8))
            await asyncio.sleep(rng.uniform(0, 0.03) * UNIT)  # the scenario: an uneven pace
        await poll_until(lambda: len(set(handled)) >= commands, 30, "every command handled")
        # Every reply is out once a later command's is (one lane, in order): one more.
        await sender.send(f"!echo {commands}")
        commands += 1
        await async_wait_until(lambda: _has_reply(sender, f"echoed {commands - 1}"), 15 * UNIT)
        bot.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(15):
                await task
    await sender.aclose()
    assert handled == list(range(commands)), "a command was handled twice, skipped or reordered"
    async with httpx.AsyncClient(base_url=server.url, headers=sender.http.headers) as http:
        replies = (await http.get("/api/chats", params={"query": "echoed", "size": 1000})).json()
    contents = [r["content"] for r in replies]
    assert len(contents) == len(set(contents)), "a command was answered twice"


async def _has_reply(sender: Sender, content: str) -> bool:
    found = (await sender.http.get("/api/chats", params={"query": content, "size": 50})).json()
    return any(c["content"] == content for c in found)
