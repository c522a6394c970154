"""Bots against the embedded server over real sockets, through the testing plugin."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest
from botkit import eventually

from concordctl import Bot, ChatReactionsUpdated, ChatSent, Context, Event, UnknownEvent
from concordctl.bot import SyncContext
from concordctl.errors import NotFound
from concordctl.testing import Harness
from tests.helpers.timing import UNIT, async_wait_until


async def test_commands_reply_react_and_help(concord_harness: Harness) -> None:
    bot = Bot()

    @bot.command("ping")
    async def ping(ctx: Context) -> None:
        """Answer pong."""
        await ctx.typing()
        await ctx.react("🏓")
        await ctx.reply("pong")

    @bot.command("echo", aliases=["say"])
    def echo(ctx: SyncContext) -> None:  # a plain def: runs in a worker thread
        """Repeat the arguments."""
        ctx.reply(" | ".join(ctx.args))

    await concord_harness.start_bot(bot)
    chat = await concord_harness.send("!ping")
    assert (await concord_harness.expect_reply(chat)).content == "pong"
    await concord_harness.expect_reaction(chat, "🏓")
    await concord_harness.expect_event("chat_typing", lambda ev: ev.channel_id == chat.channel_id)

    reply = await concord_harness.ask('!say one "two three"')
    assert reply.content == "one | two three"
    help_text = (await concord_harness.ask("!help")).content
    assert "!ping — Answer pong." in help_text and "!echo (also !say)" in help_text


async def test_filters_resolve_names_against_the_server(concord_harness: Harness) -> None:
    h = concord_harness
    alice = await h.user("alice")
    ops = await alice.create_channel("ops")
    await h.register("bob")
    bot = Bot()
    seen: list[str] = []

    @bot.on("chat_sent", channel="#ops")
    async def in_ops(ev: ChatSent) -> None:
        seen.append("ops:" + ev.chat.content)

    @bot.on("chat_sent", author="bob", match=r"^deploy (\w+)$")
    async def bob_deploys(ev: ChatSent, m: re.Match[str]) -> None:
        seen.append("deploy:" + m.group(1))
        await bot.client.send_chat(ev.chat.channel_id, f"deploying {m.group(1)}")

    @bot.on("chat_sent", thread=None, channel="general")
    async def top_level(ev: ChatSent) -> None:
        seen.append("top:" + ev.chat.content)

    await h.start_bot(bot)
    root = await h.send("root", channel="general")
    await h.send("in thread", channel="general", thread_id=root.id)
    await h.send("hello ops", channel=ops.id)
    await h.send("deploy web", as_user="alice")
    chat = await h.send("deploy api", as_user="bob", channel="ops")
    assert (await h.expect_reply(chat)).content == "deploying api"
    # everything before the reply has been handled by now (lanes keep order per channel)
    assert "ops:hello ops" in seen and "ops:deploy api" in seen
    assert "deploy:api" in seen and "deploy:web" not in seen
    assert "top:root" in seen and "top:in thread" not in seen


async def test_per_channel_order_and_isolation_over_the_wire(
    concord_harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = concord_harness
    alice = await h.user("alice")
    second = await alice.create_channel("second")
    bot = Bot(timeout=0.5)
    order: dict[int, list[int]] = {}

    @bot.on("chat_sent", match=r"^\d+$")
    async def record(ev: ChatSent) -> None:
        n = int(ev.chat.content)
        # The scenario, not a wait: uneven handlers, so later chats would overtake earlier ones.
        await asyncio.sleep(0.01 * UNIT * (n % 3))
        order.setdefault(ev.chat.channel_id, []).append(n)

    @bot.on("chat_sent", match="^boom$")
    async def raises(ev: ChatSent) -> None:
        raise RuntimeError("handler bug")

    @bot.on("chat_sent", match="^hang$")
    async def hangs(ev: ChatSent) -> None:
        await asyncio.Event().wait()  # forever

    @bot.command("alive")
    async def alive(ctx: Context) -> None:
        await ctx.reply("still here")

    await h.start_bot(bot, raise_handler_errors=False)  # handlers fail on purpose
    with caplog.at_level(logging.ERROR, logger="concordctl.bot"):
        await h.send("boom")
        await h.send("hang")
        for i in range(12):
            await h.send(str(i), channel="general" if i % 2 else second.id)
        reply = await h.ask("!alive")
        assert reply.content == "still here"
        await eventually(lambda: "timed out" in caplog.text and sum(map(len, order.values())) == 12)
    assert order and all(v == sorted(v) and len(v) == 6 for v in order.values())
    assert "handler bug" in caplog.text and "raises raised on chat_sent" in caplog.text
    assert "hangs timed out after 0.5 s" in caplog.text


async def test_lifecycle_hooks_every_and_shutdown_with_a_handler_in_flight(
    concord_harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = concord_harness
    bot = Bot(grace=10 * UNIT)
    log_: list[str] = []
    started = asyncio.Event()
    release = asyncio.Event()
    ticked_twice = asyncio.Event()
    ticks = 0

    @bot.on_ready
    async def ready() -> None:
        log_.append("ready")
        await bot.client.send_chat("general", "bot online")

    @bot.every(seconds=0.05)
    async def tick() -> None:
        nonlocal ticks
        ticks += 1
        if ticks >= 2:
            ticked_twice.set()

    @bot.command("slow")
    async def slow(ctx: Context) -> None:
        started.set()
        await release.wait()  # in flight when the stop comes, until the bot waits for it
        await ctx.reply("slow done")
        log_.append("slow done")

    @bot.on_shutdown
    async def bye() -> None:
        log_.append("shutdown")
        await bot.client.send_chat("general", "bot offline")

    await h.start_bot(bot)
    await h.expect_reply(match="bot online")
    await asyncio.wait_for(ticked_twice.wait(), 5)  # a loaded machine may be slow to tick
    await h.send("!slow")
    await asyncio.wait_for(started.wait(), 5)
    with caplog.at_level(logging.INFO, logger="concordctl.bot"):
        stopping = asyncio.create_task(h.stop_bot(bot))  # while the handler is still running
        await async_wait_until(lambda: "waiting up to" in caplog.text, what="the grace wait")
    release.set()
    await stopping
    assert log_ == ["ready", "slow done", "shutdown"]
    await h.expect_reply(match="bot offline")
    assert not bot.running


async def test_recovered_chats_after_a_drop_are_marked(concord_harness: Harness) -> None:
    h = concord_harness
    bot = Bot()
    seen: list[tuple[str, bool]] = []

    @bot.on("chat_sent")
    async def record(ev: ChatSent) -> None:
        seen.append((ev.chat.content, ev.recovered))

    @bot.command("ping", recovered=False)
    async def ping(ctx: Context) -> None:
        await ctx.reply("pong")

    await h.start_bot(bot)
    await h.send("before")
    h.refuse_connections(1.0)
    await h.drop_connections()
    stale = await h.send("!ping")  # skipped when recovered: recovered=False
    await h.send("while away")
    await eventually(lambda: ("while away", True) in seen)
    assert ("before", False) in seen and ("while away", True) in seen
    assert ("!ping", True) in seen  # the on handler got it, marked
    chat = await h.send("!ping")  # live again: answered
    reply = await h.expect_reply(stale, match="pong")
    assert reply.id > chat.id  # the first pong answers the live ping, not the stale one
    await h.expect_no_reply(reply, match="pong", within=0.3)


async def test_unknown_events_reach_star_handlers(concord_harness: Harness) -> None:
    h = concord_harness
    bot = Bot()
    got: list[Event] = []
    arrived = asyncio.Event()

    @bot.on("*")
    async def everything(ev: Event) -> None:
        got.append(ev)
        if isinstance(ev, UnknownEvent):
            arrived.set()

    @bot.on(ChatReactionsUpdated)
    async def reactions(ev: ChatReactionsUpdated) -> None:
        got.append(ev)

    await h.start_bot(bot)
    await h.send_raw('{"type": "poll_created", "pollId": 5}')
    await asyncio.wait_for(arrived.wait(), 5)
    unknown = next(ev for ev in got if isinstance(ev, UnknownEvent))
    assert unknown.type == "poll_created" and unknown.data["pollId"] == 5


async def test_watchdog_reopens_a_silent_stream_and_health_file(
    concord_harness: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = concord_harness
    health = tmp_path / "alive"
    bot = Bot(watchdog=0.3, health_file=health)

    @bot.command("ping")
    async def ping(ctx: Context) -> None:
        await ctx.reply("pong")

    with caplog.at_level(logging.WARNING, logger="concordctl.bot"):
        await h.start_bot(bot)
        await eventually(lambda: "watchdog: no event" in caplog.text)
        assert "reopening the stream" in caplog.text
        assert health.exists()
        # still answering on the reopened stream
        assert (await h.ask("!ping", timeout=10)).content == "pong"
    await h.stop_bot(bot)
    assert not health.exists()  # removed at a clean stop


async def test_throttling_keeps_a_chatty_bot_under_its_rate(
    concord_harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = concord_harness
    bot = Bot(send_rate=20, send_burst=1)

    @bot.command("spam")
    async def spam(ctx: Context) -> None:
        for i in range(6):
            await ctx.reply(f"spam {i}")

    await h.start_bot(bot)
    with caplog.at_level(logging.WARNING, logger="concordctl.bot"):
        chat = await h.send("!spam")
        first = await h.expect_reply(chat, match="spam 0")
        last = await h.expect_reply(chat, match="spam 5")
    assert last.created_at - first.created_at >= 5 * 50 * 0.8  # ms at 20 per second
    assert "throttling" in caplog.text


async def test_a_bot_rides_out_garbage_frames_and_a_server_restart(
    concord_harness: Harness,
) -> None:
    h = concord_harness
    bot = Bot()
    ready_count = 0

    @bot.on_ready
    def ready() -> None:
        nonlocal ready_count
        ready_count += 1

    @bot.command("ping")
    async def ping(ctx: Context) -> None:
        await ctx.reply("pong")

    await h.start_bot(bot)
    await h.send_raw(b"not json at all")
    await h.send_raw('{"type": "chat_sent", "chat": 5}')  # a known type, malformed
    assert (await h.ask("!ping")).content == "pong"
    await h.restart_server()
    assert (await h.ask("!ping", timeout=15)).content == "pong"
    assert ready_count == 1  # a reconnect is not a new start


async def test_harness_expectations_fail_with_what_was_seen(concord_harness: Harness) -> None:
    h = concord_harness
    await h.start_bot(Bot())  # no commands: never answers
    chat = await h.send("!nothing here")
    with pytest.raises(AssertionError, match=r"no reply within 0.3 s; last events seen: .*nothing"):
        await h.expect_reply(chat, timeout=0.3)
    await h.expect_no_reply(chat, within=0.2)
    answered = Bot()

    @answered.on("chat_sent")
    async def echo(ev: ChatSent) -> None:
        await answered.client.send_chat(ev.chat.channel_id, "echo")

    await h.start_bot(answered, username="echoer")
    chat = await h.send("hello")
    with pytest.raises(AssertionError, match="unexpected reply: 'echo'"):
        await h.expect_no_reply(chat, within=5)


async def test_start_bot_raises_why_the_bot_could_not_start(concord_harness: Harness) -> None:
    bot = Bot()
    bot.on("chat_sent", channel="no-such-channel")(lambda ev: None)
    with pytest.raises(NotFound):
        await concord_harness.start_bot(bot)
    assert not bot.running
