"""Command plans (bot/plans.py) against the general path: the same calls, replies and errors."""

from __future__ import annotations

import asyncio
import enum
from typing import Any, Literal

import pytest
from botkit import BOT_ID, FakeClient, chat, from_list

import concordctl.bot.dispatch as dispatch_module
from concordctl import ArgumentError, Bot, ChatSent, Context, Cooldown, HandlerError
from concordctl.bot.plans import Plan, _clock, command_plans
from concordctl.protocol import Event


class Size(enum.Enum):
    SMALL = "s"
    LARGE = "l"


#: The first words of command_bot's commands that have a plan.
PLANNED = {"!deploy", "!dep", "!echo", "!size", "!boom", "!quiet", "!checked", "!once"}


def command_bot(listener: bool = False) -> tuple[Bot, list[Any]]:
    """A bot with commands of every kind a plan is made for (and a few it is not).

    ``listener``: also an ``on`` handler with a filter, so that no chat takes
    the feed's fast path and the dispatcher runs the plans.
    """
    bot = Bot(send_rate=0)  # no pacing: the replies are compared, not timed
    calls: list[Any] = []

    if listener:

        @bot.on("chat_sent", channel="general")
        async def heard(ev: ChatSent) -> None:
            calls.append(("heard", ev.chat.content))

    def not_carol(ctx: Context) -> bool:
        return ctx.chat.author_id != 12

    @bot.command(
        "deploy",
        aliases="dep",
        check=not_carol,
        denied="⛔ not you",
        cooldown=Cooldown(12, per=60, key="user"),
    )
    async def deploy(
        ctx: Context,
        service: Literal["web", "api"],
        count: int = 1,
        *,
        env: Literal["prod", "staging"] = "staging",
        force: bool = False,
    ) -> None:
        calls.append(("deploy", ctx.command, ctx.text, service, count, env, force))

    @bot.command("echo")
    async def echo(ctx: Context) -> None:
        calls.append(("echo", ctx.text, ctx.args, ctx.usage))

    @bot.command("size")
    async def size(ctx: Context, size: Size, ratio: float = 1.0, *, note: str = "") -> None:
        calls.append(("size", size, ratio, note))

    @bot.command("boom", cooldown=Cooldown(3, per=60, key="channel"))
    async def boom(ctx: Context, n: int) -> None:
        if n == 1:
            raise RuntimeError("boom")
        if n == 2:
            raise ArgumentError("n: not 2")
        calls.append(("boom", n))

    @bot.command("quiet", check=lambda ctx: False)
    async def quiet(ctx: Context) -> None:
        calls.append("quiet")

    def broken(ctx: Context) -> bool:
        raise ValueError("broken check")

    @bot.command("checked", check=broken)
    async def checked(ctx: Context) -> None:
        calls.append("checked")

    once_a_while = Cooldown(1, per=30, key="global")

    @bot.command("once", cooldown=once_a_while, cooldown_message="wait {command}")
    async def once(ctx: Context) -> None:
        calls.append(("once", ctx.chat.channel_id))

    @bot.command("ops", channel="ops")  # a filter: never a plan
    async def ops(ctx: Context) -> None:
        calls.append("ops")

    @bot.command("slow")  # it awaits: never inline, never a plan
    async def slow(ctx: Context) -> None:
        await asyncio.sleep(0)
        calls.append("slow")

    return bot, calls


def chats() -> list[Event]:
    """Every shape of command chat: plain, odd spacing, errors, refusals, cooldowns."""
    lines = [
        "!deploy web 3 --env prod",
        "!deploy api",
        "!deploy web --force",
        "!dep api 2 --env staging --force",
        "!deploy  web   2  ",
        "!deploy web\t2",
        "!deploy\tweb",
        "!DEPLOY web",
        "!deploy web --env",
        "!deploy web three",
        "!deploy nope",
        "!deploy web 3 4",
        "!deploy",
        "!deploy web --envv prod",
        "!deploy web --env=prod",
        "!deploy web --no-force",
        "!deploy 'web' 2",
        "!deploy web -- --env",
        "!echo",
        "!echo a 'b c' d",
        "!echo   spaced   out  ",
        "!size l 0.5 --note big",
        "!size S",
        "!size medium",
        "!boom 1",
        "!boom 2",
        "!boom x",
        "!boom 3",
        "!boom 4",
        "!quiet",
        "!checked",
        "!once",
        "!once",
        "!ops",
        "!slow",
        "!nothing here",
        "!",
        "! deploy web",
        "not a command",
    ]
    events: list[Event] = [chat(line) for line in lines]
    events += [chat("!deploy web", author=12), chat("!deploy api", author=12)]  # denied
    events += [chat("!deploy web", author=13) for _ in range(13)]  # the 13th: cooldown
    events += [chat("!boom 5", channel=2), chat("!ops", channel=3)]
    events += [chat("!deploy web", author=BOT_ID)]  # the bot's own: ignored
    events += [chat("!deploy api", recovered=True), chat("!echo old", recovered=True)]
    return events


async def outcome(
    events: list[Event], planned: bool, listener: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, ...]:
    """Run every chat through the bot, with plans or without; what it did, and the plans run."""
    ran: list[str] = []
    make = command_plans

    def counted(*args: Any) -> dict[str, Plan]:
        if not planned:
            return {}

        def count(head: str, plan: Plan) -> Plan:
            def run(ev: ChatSent, rest: str) -> Any:
                ran.append(head)
                return plan(ev, rest)

            return run

        return {head: count(head, plan) for head, plan in make(*args).items()}

    monkeypatch.setattr(dispatch_module, "command_plans", counted)
    bot, calls = command_bot(listener)
    errors: list[HandlerError] = []
    client = FakeClient()
    async with asyncio.timeout(10):
        await bot.serve(
            client=client,  # type: ignore[arg-type]
            events=from_list(events),
            on_handler_error=errors.append,
        )
    replies = [(w[1], w[2]) for w in client.writes if w[0] == "send"]
    failed = [(e.handler, repr(e.exception), e.ctx.text if e.ctx else None) for e in errors]
    return calls, replies, failed, ran


@pytest.mark.parametrize("listener", [False, True], ids=["from the feed", "from dispatch"])
async def test_a_plan_does_what_the_general_path_does(
    listener: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = chats()
    planned = await outcome(events, True, listener, monkeypatch)
    general = await outcome(events, False, listener, monkeypatch)
    assert planned[:3] == general[:3]
    calls, replies, failed, ran = planned
    # the plans did run, and only for the exact first words they are made for
    assert set(ran) == PLANNED
    assert general[3] == []
    # and what both did is what the bot should do (a few spot checks)
    assert ("deploy", "deploy", "web 3 --env prod", "web", 3, "prod", False) in calls
    assert ("deploy", "dep", "api 2 --env staging --force", "api", 2, "staging", True) in calls
    assert ("echo", "a 'b c' d", ["a", "b c", "d"], "!echo") in calls
    assert ("size", Size.LARGE, 0.5, "big") in calls
    assert (1, "⛔ not you") in replies
    assert (1, "n: not 2\nusage: !boom <n>") in replies
    assert (1, "⏳ !deploy again in 60 s") in replies
    assert (1, "wait !once") in replies
    assert (1, "⏳ !boom again in 60 s") in replies and ("boom", 3) in calls
    assert ("boom", 5) in calls  # another channel: another bucket
    assert [f[:2] for f in failed] == [
        ("command_bot.<locals>.boom", "RuntimeError('boom')"),
        ("command_bot.<locals>.checked", "ValueError('broken check')"),
    ]


async def test_plans_are_made_only_where_the_general_path_runs_inline() -> None:
    bot, _ = command_bot()
    seen: dict[str, Plan] = {}

    @bot.on("chat_sent")
    async def spy(ev: ChatSent) -> None:
        if not seen:
            assert bot._runtime is not None
            seen.update(bot._runtime.dispatcher.plans)

    await bot.serve(client=FakeClient(), events=from_list([chat("hello")]))  # type: ignore[arg-type]
    # not !ops (a channel filter), not !slow (it awaits), not !help (built in)
    assert set(seen) == PLANNED


async def test_no_plans_with_middleware() -> None:
    bot, _ = command_bot()
    seen: list[int] = []

    @bot.middleware
    async def passthrough(call: Any, call_next: Any) -> None:
        await call_next()

    @bot.on("chat_sent")
    async def spy(ev: ChatSent) -> None:
        assert bot._runtime is not None
        seen.append(len(bot._runtime.dispatcher.plans))

    await bot.serve(client=FakeClient(), events=from_list([chat("hello")]))  # type: ignore[arg-type]
    assert seen == [0]


async def test_a_plan_reads_the_loops_clock() -> None:
    loop = asyncio.get_running_loop()
    clock = _clock(loop)
    assert abs(clock() - loop.time()) < 1.0  # the same clock (asyncio's is time.monotonic)

    class Stepped(asyncio.SelectorEventLoop):
        def time(self) -> float:
            return 42.0

    other = Stepped()
    try:
        assert _clock(other)() == 42.0
    finally:
        other.close()
