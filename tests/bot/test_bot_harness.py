"""The harness fixes and typed commands over the wire, against the embedded server."""

from __future__ import annotations

import time

import pytest

from concordctl import Bot, Context, User
from concordctl.testing import HandlerFailed, Harness
from tests.helpers.timing import UNIT


async def test_expectations_after_a_fault_see_what_the_server_sent(
    concord_harness: Harness,
) -> None:
    h = concord_harness
    bob = await h.user("bob")
    for i in range(5):  # the observer client used to miss these about 2 in 5 times
        chat = await h.send(f"react to me {i}", as_user="alice")
        await h.drop_connections()
        h.refuse_connections(0.5 * UNIT)
        await h.react(chat, "👍", as_user="bob")  # REST works while sockets are refused
        await h.expect_reaction(chat, "👍", timeout=2 * UNIT)
        channel_id = (await bob.create_channel(f"c{i}-{time.monotonic_ns()}")).id
        await h.expect_event("channel_created", lambda ev, cid=channel_id: ev.channel.id == cid)


async def test_expect_reply_takes_a_channel_name(concord_harness: Harness) -> None:
    bot = Bot()

    @bot.command("where")
    async def where(ctx: Context) -> None:
        await ctx.reply("here")

    await concord_harness.start_bot(bot)
    chat = await concord_harness.send("!where", channel="general")
    assert (await concord_harness.expect_reply(chat, channel="general")).content == "here"
    assert (await concord_harness.expect_reply(channel="#general", match="here")).content == "here"


async def test_a_handler_exception_fails_the_expectation_at_once(concord_harness: Harness) -> None:
    bot = Bot()

    @bot.command("broken")
    async def broken(ctx: Context) -> None:
        raise KeyError("missing key")

    await concord_harness.start_bot(bot)
    started = time.monotonic()
    with pytest.raises(HandlerFailed, match="broken raised") as err:
        await concord_harness.ask("!broken", timeout=5 * UNIT)
    assert time.monotonic() - started < 4 * UNIT
    assert "KeyError: 'missing key'" in str(err.value)


async def test_a_typed_command_resolves_users_against_the_server(concord_harness: Harness) -> None:
    h = concord_harness
    await h.register("bob")
    bot = Bot()

    @bot.command("greet")
    async def greet(ctx: Context, who: User, *, shout: bool = False) -> None:
        text = f"hello {who.username} (#{who.id})"
        await ctx.reply(text.upper() if shout else text)

    await h.start_bot(bot)
    assert (await h.ask("!greet @bob")).content == f"hello bob (#{h.user_id('bob')})"
    assert (await h.ask("!greet bob --shout")).content.startswith("HELLO BOB")
    reply = await h.ask("!greet nobody")
    assert reply.content.splitlines() == ["who: no user 'nobody'", "usage: !greet <who> [--shout]"]


async def test_conversations_free_the_lane_and_the_clock(concord_harness: Harness) -> None:
    h = concord_harness
    bot = Bot(timeout=1 * UNIT)

    @bot.command("deploy")
    async def deploy(ctx: Context, service: str) -> None:
        ask = await ctx.reply(f"deploy {service}? answer yes/no, or react ✅")
        try:
            if service == "api":
                await ctx.wait_for_reaction(ask, "✅", timeout=5 * UNIT)
                await ctx.reply("api approved")
                return
            answer = await ctx.wait_for_reply(match=r"^(yes|no)\b", timeout=5 * UNIT)
        except TimeoutError:
            await ctx.reply("cancelled")
            return
        await ctx.reply(f"{service}: {answer.content}")

    await h.start_bot(bot)
    await h.ask("!deploy web", match="answer yes/no")
    # bob's command runs while alice's waits in the same lane (same handler, same channel)
    await h.ask("!deploy db", as_user="bob", match="answer yes/no")
    maybe = await h.send("maybe", as_user="alice")  # not an answer: no match
    started = time.monotonic()
    while time.monotonic() - started < 1.5 * UNIT:  # past the 1 s handler timeout
        await h.expect_no_reply(maybe, within=0.3 * UNIT)
    await h.send("yes please", as_user="alice")
    assert (await h.expect_reply(match="^web:")).content == "web: yes please"
    await h.send("no", as_user="bob")
    assert (await h.expect_reply(match="^db:")).content == "db: no"
    ask = await h.ask("!deploy api", as_user="alice", match="^deploy api")
    await h.react(ask, "✅", as_user="bob")  # someone else's approval does not count
    await h.expect_no_reply(ask, within=0.3 * UNIT, match="approved")
    await h.react(ask, "✅", as_user="alice")
    await h.expect_reply(match="api approved")


async def test_harness_bots_reconnect_at_a_loopback_pace(concord_harness: Harness) -> None:
    bot = await concord_harness.start_bot(Bot())
    assert bot.client.stream_options["backoff"] == {"base": 0.05, "cap": 0.5}


async def test_an_approval_given_during_a_gap_still_counts(concord_harness: Harness) -> None:
    h = concord_harness
    bot = Bot(timeout=10 * UNIT)
    gaps: list[str] = []

    @bot.on("concordctl.gap")
    async def gap(ev: object) -> None:
        gaps.append("gap")  # the Gap still reaches handlers after waking the waiter

    @bot.command("deploy")
    async def deploy(ctx: Context) -> None:
        ask = await ctx.reply("deploy? react ✅")
        try:
            await ctx.wait_for_reaction(ask, "✅", timeout=8 * UNIT)
        except TimeoutError:
            await ctx.reply("cancelled")
            return
        await ctx.reply("approved")

    await h.start_bot(bot)
    ask = await h.ask("!deploy", match="^deploy\\?")
    await h.drop_connections()
    h.refuse_connections(1 * UNIT)  # the bot is away while alice approves
    await h.react(ask, "✅", as_user="alice")  # over REST: no socket hears it
    # Concord does not replay the reaction; the Gap on reconnecting makes the bot look again.
    reply = await h.expect_reply(match="^(approved|cancelled)$", timeout=6 * UNIT)
    assert reply.content == "approved"
    assert gaps == ["gap"]
