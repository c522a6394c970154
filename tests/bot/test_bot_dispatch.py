"""The dispatch core without sockets: registry, filters, commands, lanes, isolation."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from botkit import BOT_ID, FakeClient, chat, eventually, from_list

from concordctl import Bot, Context
from concordctl.bot import SyncContext, parse_command
from concordctl.errors import NotFound, UsageError
from concordctl.protocol import (
    ChatDeleted,
    ChatEdited,
    ChatSent,
    Event,
    UnknownEvent,
    UserJoined,
    decode_event,
)
from tests.helpers.timing import UNIT, async_wait_until


async def run(bot: Bot, events: list[Any], client: FakeClient | None = None) -> FakeClient:
    client = client or FakeClient()
    async with asyncio.timeout(10):
        await bot.serve(client=client, events=from_list(events))  # type: ignore[arg-type]
    return client


# -- registration ------------------------------------------------------------


def test_unknown_type_name_is_rejected_with_the_valid_names() -> None:
    bot = Bot()
    with pytest.raises(UsageError) as err:
        bot.on("chat_sen")
    text = str(err.value)
    assert "did you mean 'chat_sent'" in text
    assert "chat_reactions_updated" in text and "user_joined" in text and '"*"' in text


def test_event_classes_and_star_are_accepted_other_things_not() -> None:
    bot = Bot()
    bot.on(ChatSent)(lambda ev: None)
    bot.on(UnknownEvent)(lambda ev: None)
    bot.on("*")(lambda ev: None)
    with pytest.raises(UsageError, match="not an event type"):
        bot.on(dict)


def test_a_filter_the_type_cannot_have_is_an_error_at_registration() -> None:
    bot = Bot()
    with pytest.raises(UsageError, match="match= cannot filter chat_deleted"):
        bot.on("chat_deleted", match="x")
    with pytest.raises(UsageError, match="author= cannot filter chat_edited"):
        bot.on("chat_edited", author="alice")
    with pytest.raises(UsageError, match="channel= cannot filter user_joined"):
        bot.on("user_joined", channel="general")
    with pytest.raises(UsageError, match="invalid match="):
        bot.on("chat_sent", match="(")


def test_duplicate_command_names_are_rejected() -> None:
    bot = Bot()
    bot.command("deploy", aliases=["d"])(lambda ctx: None)
    with pytest.raises(UsageError, match="already registered"):
        bot.command("d")(lambda ctx: None)
    assert set(bot.commands) == {"deploy", "d", "help"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("!ping", ("ping", [], "")),
        ("!echo a b", ("echo", ["a", "b"], "a b")),
        ("!deploy web \"blue green\" 'x y'", ("deploy", ["web", "blue green", "x y"], None)),
        ("!Deploy\tweb", ("deploy", ["web"], "web")),
        ('!say "unbalanced quote', ("say", ['"unbalanced', "quote"], '"unbalanced quote')),
        ("! ping", None),
        ("!", None),
        ("ping", None),
    ],
)
def test_parse_command(content: str, expected: tuple[str, list[str], str | None] | None) -> None:
    got = parse_command(content, "!")
    if expected is None:
        assert got is None
        return
    assert got is not None
    assert got[:2] == expected[:2]
    if expected[2] is not None:
        assert got[2] == expected[2]


# -- dispatch and filters ----------------------------------------------------


async def test_every_matching_handler_gets_the_event_in_registration_order() -> None:
    bot = Bot()
    seen: list[str] = []

    @bot.on("chat_sent")
    async def first(ev: ChatSent) -> None:
        seen.append("first:" + ev.chat.content)

    @bot.on(ChatSent)
    async def second(ev: ChatSent) -> None:
        seen.append("second:" + ev.chat.content)

    @bot.on("chat_deleted")
    async def deleted(ev: ChatDeleted) -> None:
        seen.append("deleted")

    @bot.on("*")
    async def everything(ev: Event) -> None:
        seen.append("star:" + ev.type)

    @bot.on(UnknownEvent)
    async def unknown(ev: UnknownEvent) -> None:
        seen.append(f"unknown:{ev.type}:{ev.data['x']}")

    await run(
        bot,
        [
            chat("hi"),
            decode_event(b'{"type":"chat_deleted","chatId":1,"channelId":1,"threadId":null}'),
            decode_event(b'{"type":"poll_created","x":7}'),
        ],
    )
    assert seen == [
        "first:hi",
        "second:hi",
        "star:chat_sent",
        "deleted",
        "star:chat_deleted",
        "star:poll_created",
        "unknown:poll_created:7",
    ]


async def test_channel_and_author_filters_by_name_or_id_resolved_once() -> None:
    bot = Bot()
    got: list[str] = []

    @bot.on("chat_sent", channel="general")
    async def by_name(ev: ChatSent) -> None:
        got.append("name:" + ev.chat.content)

    @bot.on("chat_sent", channel="#general", author="bob")
    async def by_both(ev: ChatSent) -> None:
        got.append("both:" + ev.chat.content)

    @bot.on("chat_sent", channel=2)
    async def by_id(ev: ChatSent) -> None:
        got.append("id:" + ev.chat.content)

    client = await run(
        bot,
        [chat("a", channel=1, author=10), chat("b", channel=2), chat("c", channel=1, author=11)]
        * 3,
    )
    assert sorted(set(got)) == ["both:c", "id:b", "name:a", "name:c"]
    # names were resolved at start, not per event (general, #general, bob)
    assert len(client.lookups) == 3


async def test_an_unknown_channel_name_fails_at_start_with_suggestions() -> None:
    bot = Bot()
    bot.on("chat_sent", channel="genral")(lambda ev: None)
    with pytest.raises(NotFound) as err:
        await run(bot, [chat("x")])
    assert "general" in err.value.suggestions


async def test_match_filter_passes_the_match_object_and_thread_filter() -> None:
    bot = Bot()
    got: list[Any] = []

    @bot.on("chat_sent", match=r"deploy (\w+)")
    async def deploys(ev: ChatSent, m: re.Match[str]) -> None:
        got.append(("deploy", m.group(1)))

    @bot.on("chat_edited", match=r"^fixed")
    async def edits(ev: ChatEdited) -> None:
        got.append(("edited", ev.chat_id))

    @bot.on("chat_sent", thread=None)
    async def top_level(ev: ChatSent) -> None:
        got.append(("top", ev.chat.content))

    @bot.on("chat_sent", thread=77)
    async def in_thread(ev: ChatSent) -> None:
        got.append(("thread", ev.chat.content))

    await run(
        bot,
        [
            chat("please deploy web now"),
            chat("nothing", thread=77),
            ChatEdited(chat_id=5, channel_id=1, thread_id=None, content="fixed typo"),
            ChatEdited(chat_id=6, channel_id=1, thread_id=None, content="not it"),
        ],
    )
    assert ("deploy", "web") in got
    assert ("edited", 5) in got and ("edited", 6) not in got
    assert ("top", "please deploy web now") in got and ("top", "nothing") not in got
    assert ("thread", "nothing") in got and len(got) == 4


async def test_own_chats_are_ignored_unless_asked_and_recovered_ones_are_marked() -> None:
    bot = Bot()
    got: list[str] = []

    @bot.on("chat_sent")
    async def normal(ev: ChatSent) -> None:
        got.append("normal:" + ev.chat.content + (":rec" if ev.recovered else ""))

    @bot.on("chat_sent", include_self=True)
    async def everything(ev: ChatSent) -> None:
        got.append("all:" + ev.chat.content)

    @bot.on("chat_sent", recovered=False)
    async def live_only(ev: ChatSent) -> None:
        got.append("live:" + ev.chat.content)

    await run(bot, [chat("mine", author=BOT_ID), chat("old", recovered=True), chat("new")])
    assert sorted(got) == sorted(
        ["all:mine", "normal:old:rec", "all:old", "normal:new", "all:new", "live:new"]
    )


# -- commands ----------------------------------------------------------------


async def test_commands_aliases_quoting_context_and_help() -> None:
    bot = Bot(prefix="!")
    got: list[Context] = []

    @bot.command("deploy", aliases=["d"])
    async def deploy(ctx: Context) -> None:
        """Deploy a service: !deploy NAME [ENV].

        More words that only `!help deploy` shows."""
        got.append(ctx)
        await ctx.reply(f"deploying {ctx.args[0]} to {ctx.args[1]}")
        await ctx.react("👍")
        await ctx.typing()

    @bot.command()
    async def status(ctx: Context) -> None:
        await ctx.reply("ok")

    client = await run(
        bot,
        [
            chat('!deploy web "blue green"', channel=2),
            chat("!D api prod", channel=3),
            chat("!nosuch"),
            chat("!help"),
            chat("!help d"),
        ],
    )
    assert [c.args for c in got] == [["web", "blue green"], ["api", "prod"]]
    assert got[0].command == "deploy" and got[1].command == "d"
    assert got[0].chat.channel_id == 2 and got[0].client is not None
    sends = [w for w in client.writes if w[0] == "send"]
    assert ("send", 2, "deploying web to blue green") in sends
    assert ("react", got[0].chat.id, "👍") in client.writes and ("typing", 2) in client.writes
    help_text = next(w[2] for w in sends if w[2].startswith("Commands:"))
    assert "!deploy (also !d) — Deploy a service: !deploy NAME [ENV]." in help_text
    assert "!status" in help_text and "!help" in help_text and "More words" not in help_text
    detail = next(w[2] for w in sends if w[2].startswith("!deploy | !d"))
    assert "More words" in detail
    assert not any("nosuch" in w[2] for w in sends)  # unknown commands ignored by default


async def test_unknown_command_reply_mode_and_help_disabled() -> None:
    bot = Bot(unknown_command="reply", help_command=False)
    client = await run(bot, [chat("!nosuch"), chat("!help")])
    texts = [w[2] for w in client.writes]
    assert texts == ["unknown command !nosuch", "unknown command !help"]


async def test_sync_handlers_run_in_a_worker_thread() -> None:
    bot = Bot()
    threads: dict[str, int] = {}

    @bot.command("hello")
    def hello(ctx: SyncContext) -> None:
        threads["command"] = threading.get_ident()
        sent = ctx.reply(f"hello {ctx.args[0]}")
        assert sent.content == "hello you"

    @bot.on("user_joined")
    def joined(ev: UserJoined) -> None:
        threads["on"] = threading.get_ident()

    client = await run(bot, [chat("!hello you"), UserJoined(user_id=3)])
    assert ("send", 1, "hello you") in client.writes
    main = threading.get_ident()
    assert threads["command"] != main and threads["on"] != main


# -- lanes: ordering, concurrency, isolation ----------------------------------


async def test_per_channel_order_is_kept_while_channels_run_concurrently() -> None:
    bot = Bot(concurrency=8)
    seen: dict[int, list[int]] = defaultdict(list)
    active = 0
    peak = 0

    @bot.on("chat_sent")
    async def slowish(ev: ChatSent) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        # later events of a channel finish sooner: only the lane keeps them in order
        # (the scenario: handlers of uneven length, in loop turns, not wall-clock time)
        for _ in range(3 * (int(ev.chat.content) % 5)):
            await asyncio.sleep(0)
        seen[ev.chat.channel_id].append(int(ev.chat.content))
        active -= 1

    events = [chat(str(i), channel=1 + i % 4) for i in range(80)]
    await run(bot, events)
    for channel, numbers in seen.items():
        assert numbers == sorted(numbers), channel
        assert len(numbers) == 20
    assert peak > 1  # the four channels overlapped


async def test_concurrency_is_bounded() -> None:
    bot = Bot(concurrency=2)
    active = 0
    peak = 0

    @bot.on("chat_sent")
    async def handler(ev: ChatSent) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        for _ in range(10):  # the scenario: a handler that holds its slot for a while
            await asyncio.sleep(0)
        active -= 1

    await run(bot, [chat("x", channel=c) for c in range(10)])
    assert peak == 2


async def test_backpressure_pauses_the_stream_when_lanes_are_full() -> None:
    bot = Bot(max_backlog=4)
    handled = 0
    read = 0

    @bot.on("chat_sent")
    async def handler(ev: ChatSent) -> None:
        nonlocal handled
        assert read - handled <= 5  # never more than the backlog ahead
        await asyncio.sleep(0)  # a yield: the stream could read ahead now, if it were let
        handled += 1

    async def counting() -> Any:
        nonlocal read
        for i in range(50):
            read += 1
            yield chat(str(i))

    async with asyncio.timeout(10):
        await bot.serve(client=FakeClient(), events=counting())  # type: ignore[arg-type]
    assert handled == 50


async def test_a_raising_handler_is_logged_dead_lettered_and_the_bot_goes_on(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    dead = tmp_path / "dead.ndjson"
    bot = Bot(dead_letters=dead)
    ok: list[str] = []

    @bot.on("chat_sent")
    async def fragile(ev: ChatSent) -> None:
        if "boom" in ev.chat.content:
            raise ValueError("cannot handle boom")

    @bot.on("chat_sent")
    async def sturdy(ev: ChatSent) -> None:
        ok.append(ev.chat.content)

    with caplog.at_level(logging.ERROR, logger="concordctl.bot"):
        await run(bot, [chat("a"), chat("boom!"), chat("b")])
    assert ok == ["a", "boom!", "b"]
    record = next(r for r in caplog.records if "raised" in r.getMessage())
    assert "fragile" in record.getMessage() and "'boom!'" in record.getMessage()
    assert record.exc_info is not None and "cannot handle boom" in caplog.text
    lines = dead.read_text().splitlines()
    assert len(lines) == 1
    letter = json.loads(lines[0])
    assert letter["type"] == "chat_sent" and letter["chat"]["content"] == "boom!"
    assert letter["concordctlDeadLetter"]["handler"].endswith("fragile")
    assert "cannot handle boom" in letter["concordctlDeadLetter"]["error"]

    # Replaying the dead letter feeds it to the failed handler only.
    fixed = Bot()
    calls: list[str] = []

    async def fragile(ev: ChatSent) -> None:  # noqa: F811 - the fixed version
        calls.append("fragile:" + ev.chat.content)

    fragile.__qualname__ = letter["concordctlDeadLetter"]["handler"]  # same name as the failed one
    fixed.on("chat_sent")(fragile)

    @fixed.on("chat_sent")
    async def sturdy(ev: ChatSent) -> None:  # noqa: F811
        calls.append("sturdy")

    count = await fixed.replay(dead.read_text().splitlines(), client=FakeClient())  # type: ignore[arg-type]
    assert count == 1 and calls == ["fragile:boom!"]


async def test_a_hanging_handler_times_out_and_its_lane_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = Bot(timeout=0.2)
    done: list[str] = []
    cancelled = asyncio.Event()

    @bot.on("chat_sent")
    async def hangs(ev: ChatSent) -> None:
        if ev.chat.content == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
        done.append(ev.chat.content)

    @bot.on("chat_sent", timeout=5)
    async def other(ev: ChatSent) -> None:
        done.append("other:" + ev.chat.content)

    with caplog.at_level(logging.ERROR, logger="concordctl.bot"):
        await run(bot, [chat("hang"), chat("after")])
    assert cancelled.is_set()
    assert done.count("after") == 1 and "other:hang" in done
    assert "timed out after 0.2 s" in caplog.text and "hangs" in caplog.text


async def test_a_slow_handler_does_not_hold_up_other_handlers() -> None:
    bot = Bot()
    fast_done = asyncio.Event()
    order: list[str] = []

    @bot.on("chat_sent")
    async def slow(ev: ChatSent) -> None:
        await asyncio.wait_for(fast_done.wait(), 5)
        order.append("slow")

    @bot.on("chat_sent")
    async def fast(ev: ChatSent) -> None:
        order.append("fast")
        fast_done.set()

    await run(bot, [chat("x")])
    assert order == ["fast", "slow"]


# -- lifecycle ---------------------------------------------------------------


async def test_on_ready_runs_before_events_and_every_runs_periodically() -> None:
    bot = Bot()
    log_: list[str] = []
    ticks = 0

    @bot.on_ready
    async def ready() -> None:
        for _ in range(20):  # the scenario: a slow on_ready, which events must wait for
            await asyncio.sleep(0)
        log_.append("ready")

    @bot.on("chat_sent")
    async def handler(ev: ChatSent) -> None:
        log_.append("event")

    @bot.every(seconds=0.02)
    def tick() -> None:
        nonlocal ticks
        ticks += 1

    @bot.on_shutdown
    async def bye() -> None:
        log_.append("shutdown")

    async def source() -> Any:
        yield chat("x")
        await eventually(lambda: ticks >= 3)  # the periodic task keeps running meanwhile

    async with asyncio.timeout(10):
        await bot.serve(client=FakeClient(), events=source())  # type: ignore[arg-type]
    assert log_ == ["ready", "event", "shutdown"]
    assert ticks >= 3


async def test_stop_lets_running_handlers_finish_within_the_grace_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = Bot(grace=10 * UNIT)
    finished: list[str] = []
    started = asyncio.Event()
    release = asyncio.Event()

    @bot.on("chat_sent")
    async def work(ev: ChatSent) -> None:
        started.set()
        await release.wait()  # still running when stop() comes, until the bot waits for it
        finished.append(ev.chat.content)

    @bot.on_shutdown
    async def bye() -> None:
        finished.append("shutdown")

    task = asyncio.create_task(
        bot.serve(client=FakeClient(), events=from_list([chat("a")], hang=True))  # type: ignore[arg-type]
    )
    await asyncio.wait_for(started.wait(), 5)
    with caplog.at_level(logging.INFO, logger="concordctl.bot"):
        bot.stop()
        await async_wait_until(lambda: "waiting up to" in caplog.text, what="the grace wait")
    release.set()
    await asyncio.wait_for(task, 5)
    assert finished == ["a", "shutdown"]


async def test_handlers_past_the_grace_period_are_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = Bot(grace=0.1)
    started = asyncio.Event()
    cancelled = asyncio.Event()
    hooks: list[str] = []

    @bot.on("chat_sent")
    async def forever(ev: ChatSent) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # forever
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @bot.on_shutdown
    def bye() -> None:
        hooks.append("shutdown")

    task = asyncio.create_task(
        bot.serve(client=FakeClient(), events=from_list([chat("a")], hang=True))  # type: ignore[arg-type]
    )
    await asyncio.wait_for(started.wait(), 5)
    with caplog.at_level(logging.WARNING, logger="concordctl.bot"):
        bot.stop()
        await asyncio.wait_for(task, 5)
    assert cancelled.is_set() and hooks == ["shutdown"]
    assert "after the grace period" in caplog.text


# -- writes: rate limit and loop guard ---------------------------------------


async def test_sends_faster_than_the_rate_are_delayed_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = Bot(send_rate=50, send_burst=2)
    stamps: list[float] = []

    @bot.on("chat_sent")
    async def chatty(ev: ChatSent) -> None:
        await bot.client.send_chat(1, "reply")
        stamps.append(asyncio.get_running_loop().time())

    with caplog.at_level(logging.WARNING, logger="concordctl.bot"):
        client = await run(bot, [chat(str(i), channel=i) for i in range(8)])
    assert len(client.writes) == 8
    # 8 writes at 50/s with a burst of 2 cannot take less than 6 intervals
    assert stamps[-1] - stamps[0] >= 6 * 0.02 * 0.9
    assert "throttling: the bot is writing faster than 50 per second" in caplog.text


async def test_a_handler_answering_itself_in_a_loop_is_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = Bot(send_rate=0, loop_limit=3)
    client = FakeClient()

    @bot.on("chat_sent", include_self=True)
    async def echo_everything(ev: ChatSent) -> None:
        await bot.client.send_chat(ev.chat.channel_id, "echo " + ev.chat.content)

    async def feedback() -> Any:
        yield chat("start")
        # the bot's own sends come back as events, as they would from a server
        for _ in range(10):
            try:
                sent = await asyncio.wait_for(client.sent.get(), 0.5)
            except TimeoutError:
                return  # the loop was stopped
            yield ChatSent(chat=sent)

    with caplog.at_level(logging.WARNING, logger="concordctl.bot"):
        async with asyncio.timeout(10):
            await bot.serve(client=client, events=feedback())  # type: ignore[arg-type]
    assert 3 <= len(client.writes) <= 4  # the start's answer, then loop_limit self-answers
    assert "loop guard" in caplog.text


async def test_dry_run_reports_writes_instead_of_doing_them() -> None:
    bot = Bot()
    seen: list[tuple[str, dict[str, Any]]] = []

    @bot.command("ping")
    async def ping(ctx: Context) -> None:
        sent = await ctx.reply("pong")
        await ctx.react("✅")
        assert sent.content == "pong"

    client = FakeClient()
    await bot.serve(
        client=client,  # type: ignore[arg-type]
        events=from_list([chat("!ping")]),
        dry_run=lambda action, details: seen.append((action, details)),
    )
    assert client.writes == []
    assert [a for a, _ in seen] == ["send", "react"] and seen[0][1]["content"] == "pong"


# -- watchdog and reload -----------------------------------------------------


async def test_the_watchdog_reopens_a_silent_stream_from_the_last_chat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = Bot(watchdog=0.2)
    got: list[str] = []
    opened: list[int | None] = []

    @bot.on("chat_sent")
    async def handler(ev: ChatSent) -> None:
        got.append(ev.chat.content)

    def factory(since: int | None) -> Any:
        opened.append(since)
        if len(opened) == 1:
            return from_list([chat("before", chat_id=41)], hang=True)  # then silence
        return from_list([chat("after", chat_id=42, recovered=True)])

    with caplog.at_level(logging.WARNING, logger="concordctl.bot"):
        async with asyncio.timeout(10):
            await bot.serve(client=FakeClient(), events=factory)  # type: ignore[arg-type]
    assert opened == [None, 41]
    assert got == ["before", "after"]
    assert "watchdog: no event for" in caplog.text


async def test_swap_hands_the_running_connection_to_new_handlers() -> None:
    old, new = Bot(), Bot()
    got: list[str] = []
    ready: list[str] = []
    gate = asyncio.Queue[ChatSent]()

    @old.on("chat_sent")
    async def h1(ev: ChatSent) -> None:
        got.append("old:" + ev.chat.content)

    @new.on("chat_sent")
    async def h2(ev: ChatSent) -> None:
        got.append("new:" + ev.chat.content)
        assert new.client is not None

    @new.on_ready
    async def hello() -> None:
        ready.append("new")

    async def source() -> Any:
        while True:
            yield await gate.get()

    task = asyncio.create_task(old.serve(client=FakeClient(), events=source()))  # type: ignore[arg-type]
    await asyncio.wait_for(old.wait_ready(), 5)
    gate.put_nowait(chat("1"))
    await async_wait_until(lambda: got == ["old:1"])
    await old.swap(new)
    gate.put_nowait(chat("2"))
    await async_wait_until(lambda: len(got) == 2)
    old.stop()
    await asyncio.wait_for(task, 5)
    assert got == ["old:1", "new:2"] and ready == ["new"]


async def test_await_free_handlers_run_inline_and_are_still_isolated(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from concordctl.bot import _never_suspends

    async def plain(ev: Event) -> None:
        return None

    async def awaits(ev: Event) -> None:
        await asyncio.sleep(0)  # never run: the await is what _never_suspends looks for

    async def loops(ev: Event) -> None:
        async for _ in from_list([]):
            pass

    assert _never_suspends(plain)
    assert not _never_suspends(awaits) and not _never_suspends(loops)

    bot = Bot(dead_letters=tmp_path / "dead.ndjson")
    seen: list[str] = []

    @bot.on("chat_sent")
    async def counter(ev: ChatSent) -> None:
        if ev.chat.content == "bad":
            raise KeyError("inline failure")
        seen.append(ev.chat.content)

    with caplog.at_level(logging.ERROR, logger="concordctl.bot"):
        await run(bot, [chat("a"), chat("bad"), chat("b"), chat("!cmd"), chat("c", author=BOT_ID)])
    assert seen == ["a", "b", "!cmd"]  # in order; the bot's own chat skipped
    assert "counter raised on chat_sent" in caplog.text and "inline failure" in caplog.text
    assert (tmp_path / "dead.ndjson").read_text().count("\n") == 1


async def test_a_sync_handler_past_its_timeout_is_abandoned_with_a_clear_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = Bot(timeout=0.1)
    done: list[str] = []
    release = threading.Event()

    @bot.on("chat_sent")
    def blocking(ev: ChatSent) -> None:
        if ev.chat.content == "slow":
            release.wait(30 * UNIT)  # a plain def cannot be cancelled: blocked until the end
        done.append(ev.chat.content)

    try:
        with caplog.at_level(logging.ERROR, logger="concordctl.bot"):
            await run(bot, [chat("slow"), chat("next")])
    finally:
        release.set()
    assert "next" in done
    assert "blocking timed out after 0.1 s" in caplog.text
    assert "its thread keeps running" in caplog.text


async def test_writes_without_a_server_fail_clearly(caplog: pytest.LogCaptureFixture) -> None:
    bot = Bot()

    @bot.command("ping")
    async def ping(ctx: Context) -> None:
        await ctx.reply("pong")

    with caplog.at_level(logging.ERROR, logger="concordctl.bot"):
        await bot.serve(events=from_list([chat("!ping")]))  # type: ignore[arg-type]
    assert "cannot send: this bot runs without a server" in caplog.text
