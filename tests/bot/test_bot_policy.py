"""Policy, error hook, middleware, routers, sync contexts and swap, without sockets."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from botkit import FakeClient, chat, from_list

from concordctl import Bot, Call, ChatSent, Context, Cooldown, HandlerError, Router, SyncContext
from concordctl.errors import UsageError
from tests.helpers.timing import UNIT, async_wait_until


async def run(bot: Bot, events: list[Any], *, hang: bool = False) -> FakeClient:
    client = FakeClient()
    async with asyncio.timeout(10):
        await bot.serve(client=client, events=from_list(events, hang=hang))  # type: ignore[arg-type]
    return client


def sends(client: FakeClient) -> list[str]:
    return [w[2] for w in client.writes if w[0] == "send"]


async def test_author_and_channel_collections_denied_and_checks() -> None:
    bot = Bot()
    ran: list[str] = []

    async def in_window(ctx: Context) -> bool:
        await asyncio.sleep(0)  # the scenario: a check that really suspends
        return "late" not in ctx.text

    @bot.command(
        "deploy", author={"alice", 11}, channel=["general", "ops"], check=in_window, denied="⛔ no"
    )
    async def deploy(ctx: Context) -> None:
        ran.append(ctx.text)

    @bot.command("quiet", author="bob", check=[lambda ctx: True])
    async def quiet(ctx: Context) -> None:
        ran.append("quiet")

    client = await run(
        bot,
        [
            chat("!deploy a", author=10, channel=1),  # alice in general: runs
            chat("!deploy b", author=11, channel=3),  # bob (by id) in ops: runs
            chat("!deploy c", author=12, channel=1),  # someone else: denied
            chat("!deploy d", author=10, channel=2),  # random: denied
            chat("!deploy late", author=10, channel=1),  # the check refuses: denied
            chat("!quiet", author=10),  # refused without denied=: silent
        ],
    )
    assert ran == ["a", "b"]
    assert sends(client) == ["⛔ no", "⛔ no", "⛔ no"]


def test_policy_arguments_are_checked_at_registration() -> None:
    bot = Bot()
    with pytest.raises(UsageError, match="empty collection"):
        bot.command("x", author=[])
    with pytest.raises(UsageError, match="ids or names"):
        bot.command("x", channel=[1.5])
    with pytest.raises(UsageError, match="rate >= 1"):
        Cooldown(0, per=10)
    with pytest.raises(UsageError, match="key="):
        Cooldown(1, per=10, key="planet")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "answered"),
    [
        # (author, channel) of four chats; which run
        ("user", [True, False, True, False]),
        ("channel", [True, False, False, True]),
        ("global", [True, False, False, False]),
    ],
)
async def test_cooldown_keys(key: str, answered: list[bool]) -> None:
    bot = Bot()
    ran: list[int] = []

    @bot.command("go", cooldown=Cooldown(1, per=60, key=key))  # type: ignore[arg-type]
    async def go(ctx: Context) -> None:
        ran.append(ctx.chat.id)

    events = [
        chat("!go", author=10, channel=1, chat_id=1),
        chat("!go", author=10, channel=1, chat_id=2),
        chat("!go", author=11, channel=1, chat_id=3),
        chat("!go", author=11, channel=2, chat_id=4),
    ]
    client = await run(bot, events)
    assert ran == [e.chat.id for e, ok in zip(events, answered, strict=True) if ok]
    assert sends(client) == ["⏳ !go again in 60 s"] * answered.count(False)


async def test_cooldown_message_is_configurable_and_frees_up() -> None:
    bot = Bot(cooldown_message="slow down ({seconds}s)")
    ran: list[int] = []

    @bot.command("go", cooldown=Cooldown(2, per=60, key="global"))
    async def go(ctx: Context) -> None:
        ran.append(ctx.chat.id)

    @bot.command("other", cooldown=Cooldown(1, per=30), cooldown_message="wait {command}")
    async def other(ctx: Context) -> None: ...

    client = await run(bot, [chat("!go"), chat("!go"), chat("!go"), chat("!other"), chat("!other")])
    assert len(ran) == 2
    assert sends(client)[0].startswith("slow down (")
    assert sends(client)[1] == "wait !other"


async def test_help_lists_only_what_the_asker_may_run_and_never_hidden() -> None:
    bot = Bot()

    @bot.command("public")
    async def public(ctx: Context) -> None:
        """Anyone."""

    @bot.command("admin", author="bob")
    async def admin(ctx: Context) -> None:
        """Bob only."""

    @bot.command("secret", hidden=True)
    async def secret(ctx: Context) -> None:
        """Hidden."""

    @bot.command("checked", check=lambda ctx: ctx.chat.author_id == 11)
    async def checked(ctx: Context) -> None:
        """Checked."""

    client = await run(
        bot, [chat("!help", author=10), chat("!help", author=11), chat("!help secret")]
    )
    alice, bob, hidden = sends(client)
    assert "!public" in alice and "!admin" not in alice and "!checked" not in alice
    assert "!admin" in bob and "!checked" in bob
    assert "secret" not in alice + bob
    assert hidden == "no command !secret; try !help"


async def test_on_error_gets_exceptions_timeouts_and_failing_periodic_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = Bot(timeout=0.3 * UNIT)
    errors: list[HandlerError] = []
    seen_periodic = asyncio.Event()

    @bot.command("boom")
    async def boom(ctx: Context) -> None:
        await asyncio.sleep(0)  # the scenario: it fails after a suspension, not inline
        raise ValueError("kaboom")

    @bot.on("chat_sent", match="^hang")
    async def hang(ev: ChatSent) -> None:
        await asyncio.Event().wait()

    @bot.every(seconds=0.05, now=True)
    def tick() -> None:
        raise RuntimeError("tick failed")

    @bot.on_error
    async def report(err: HandlerError) -> None:
        errors.append(err)
        if err.kind == "every":
            seen_periodic.set()
        raise RuntimeError("the error hook itself fails")  # logged, never loops

    with caplog.at_level(logging.ERROR, logger="concordctl.bot"):
        task = asyncio.create_task(run(bot, [chat("!boom"), chat("hang on")], hang=True))
        await async_wait_until(
            lambda: {e.kind for e in errors} >= {"command", "on", "every"}, timeout=10
        )
        bot.stop()
        await task
    by_kind = {e.kind: e for e in errors}
    assert isinstance(by_kind["command"].exception, ValueError)
    assert by_kind["command"].ctx is not None and by_kind["command"].ctx.command == "boom"
    assert "kaboom" in by_kind["command"].traceback
    assert by_kind["on"].timed_out and by_kind["on"].exception is None
    assert by_kind["on"].ctx is None and by_kind["on"].handler.endswith("hang")
    assert by_kind["every"].event is None and "tick failed" in repr(by_kind["every"].exception)
    assert "error hook" in caplog.text and "the error hook itself fails" in caplog.text
    # the failing hook did not report itself: every error has a real handler
    assert not any(e.handler.endswith("report") for e in errors)


async def test_argument_errors_refusals_and_cooldowns_are_not_errors() -> None:
    bot = Bot()
    errors: list[HandlerError] = []

    @bot.command("n", author="alice", denied="no", cooldown=Cooldown(1, per=60))
    async def n(ctx: Context, count: int) -> None: ...

    bot.on_error(errors.append)
    client = await run(bot, [chat("!n x"), chat("!n 1", author=11), chat("!n 1"), chat("!n 2")])
    assert len(sends(client)) == 3 and errors == []


async def test_middleware_runs_in_order_around_calls_and_can_skip() -> None:
    bot = Bot()
    trace: list[str] = []

    @bot.middleware
    async def outer(call: Call, call_next: Any) -> None:
        trace.append(f"outer>{call.kind}:{call.handler.rsplit('.', 1)[-1]}")
        await call_next()
        trace.append("outer<")

    @bot.middleware
    async def gate(call: Call, call_next: Any) -> None:
        if call.ctx is not None and call.ctx.args == ["skip"]:
            trace.append("skipped")
            return
        trace.append("gate")
        await call_next()

    @bot.command("hi")
    async def hi(ctx: Context) -> None:
        trace.append("hi")

    @bot.on("chat_sent", match="^plain")
    async def plain(ev: ChatSent) -> None:
        trace.append("plain")

    await run(bot, [chat("!hi"), chat("!hi skip"), chat("plain")])
    assert trace == [
        "outer>command:hi", "gate", "hi", "outer<",
        "outer>command:hi", "skipped", "outer<",
        "outer>on:plain", "gate", "plain", "outer<",
    ]  # fmt: skip
    with pytest.raises(UsageError, match="async def"):
        bot.middleware(lambda call, nxt: None)


async def test_routers_are_included_and_name_clashes_fail_at_load() -> None:
    admin = Router()
    calls: list[str] = []

    @admin.command("kick", aliases=["k"])
    async def kick(ctx: Context, who: str) -> None:
        calls.append(f"kick {who}")

    @admin.on_ready
    async def ready() -> None:
        calls.append("router ready")

    bot = Bot()

    @bot.command("ping")
    async def ping(ctx: Context) -> None:
        calls.append("ping")

    bot.include(admin)
    assert {"kick", "k", "ping", "help"} <= set(bot.commands)
    await run(bot, [chat("!k bob"), chat("!ping")])
    assert calls == ["router ready", "kick bob", "ping"]

    clash = Router()
    clash.command("ping")(ping)
    with pytest.raises(UsageError, match="'ping' is registered by both"):
        bot.include(clash)
    with pytest.raises(UsageError, match="already registered"):
        bot.command("k")(ping)


async def test_plain_def_handlers_of_every_kind_get_a_blocking_context() -> None:
    bot = Bot()
    done = asyncio.Event()

    @bot.on("chat_sent", match="^hello")
    def greet(ev: ChatSent, m: Any, ctx: SyncContext) -> None:
        ctx.reply(f"hi from {m.group(0)}")

    @bot.on_ready
    def ready(ctx: SyncContext) -> None:
        ctx.send(1, "ready")

    @bot.every(seconds=0.05, now=True)
    def tick(ctx: SyncContext) -> None:
        if not done.is_set():
            ctx.send("general", "tick")
            ctx.bot.loop_done = True

    @bot.on("chat_sent", match="^async")
    async def async_ctx(ev: ChatSent, ctx: Context) -> None:
        await ctx.react("👍")
        done.set()

    client = FakeClient()
    task = asyncio.create_task(
        bot.serve(client=client, events=from_list([chat("hello"), chat("async")], hang=True))  # type: ignore[arg-type]
    )
    await async_wait_until(lambda: done.is_set() and "tick" in sends(client), timeout=10)
    bot.stop()
    await task
    assert sends(client)[0] == "ready"
    assert "hi from hello" in sends(client)
    assert client.writes[[w[0] for w in client.writes].index("react")][:1] == ("react",)


async def test_swap_runs_the_old_on_shutdown_before_the_new_on_ready() -> None:
    order: list[str] = []
    old, new = Bot(), Bot()
    old.on_ready(lambda: order.append("old ready"))
    old.on_shutdown(lambda: order.append("old shutdown"))
    new.on_ready(lambda: order.append("new ready"))
    new.on_shutdown(lambda: order.append("new shutdown"))

    task = asyncio.create_task(old.serve(client=FakeClient(), events=from_list([], hang=True)))  # type: ignore[arg-type]
    await asyncio.wait_for(old.wait_ready(), 10)
    await old.swap(new)
    old.stop()
    await task
    assert order == ["old ready", "old shutdown", "new ready", "new shutdown"]


async def test_bot_wait_for_sees_events_before_dispatch() -> None:
    bot = Bot()
    got: list[str] = []

    @bot.command("ask")
    async def ask(ctx: Context) -> None:
        answer = await bot.wait_for("chat_sent", author=10, match="^(yes|no)$", timeout=5)
        assert isinstance(answer, ChatSent)
        got.append(answer.chat.content)

    @bot.command("yes")
    async def yes(ctx: Context) -> None:
        got.append("yes-command")

    await run(bot, [chat("!ask"), chat("maybe", author=11), chat("yes")])
    assert got == ["yes"]
