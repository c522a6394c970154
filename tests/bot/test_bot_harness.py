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
