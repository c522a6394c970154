"""A bot on a durable state, stopped or killed and started again, loses and repeats nothing."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

from botkit import BotProcess, cli_env

from concordctl import Bot, Context
from concordctl.protocol import ChatSent
from concordctl.testing import Harness
from tests.helpers.timing import UNIT, async_wait_until

BOT = """
import asyncio
from concordctl import Bot, Context

bot = Bot(grace=1, lease=1.5, send_rate=0)  # claims pass on after 1.5 s; replies unpaced

@bot.command("ping")
async def ping(ctx: Context) -> None:
    await asyncio.sleep(0.03)  # the scenario, not a wait: a kill often lands inside a handler
    await ctx.reply(f"pong {ctx.args[0]}")
"""


def answers(h: Harness, author: str) -> list[str]:
    uid = h.user_id(author)
    return [
        m[1]
        for ev in h.events
        if isinstance(ev, ChatSent) and ev.chat.author_id == uid
        for m in [re.fullmatch(r"pong (\S+)", ev.chat.content)]
        if m
    ]


async def test_sigkill_and_restart_answer_every_command_exactly_once(
    concord_harness: Harness, tmp_path: Path
) -> None:
    h = concord_harness
    password = await h.register("runner")
    env = cli_env(
        tmp_path, CONCORD_SERVER=h.url, CONCORD_USERNAME="runner", CONCORD_PASSWORD=password
    )
    bot_file = tmp_path / "bot.py"
    bot_file.write_text(BOT)
    state = tmp_path / "state.db"
    args = ("run", str(bot_file), "--state", str(state))
    first = await BotProcess.start(*args, env=env)
    second: BotProcess | None = None
    total = 60
    try:
        await first.wait_for_log("bot ready")

        sent = 0

        async def keep_sending() -> None:
            nonlocal sent
            for i in range(total):
                await h.send(f"!ping {i}")
                sent += 1
                await asyncio.sleep(0.02 * UNIT)  # the scenario: commands keep coming meanwhile

        sender = asyncio.create_task(keep_sending())
        await async_wait_until(lambda: len(answers(h, "runner")) >= 15, timeout=20 * UNIT)
        first.proc.send_signal(signal.SIGKILL)  # no shutdown at all
        assert await first.wait() == -signal.SIGKILL
        killed_at = len(answers(h, "runner"))
        sent_at_kill = sent
        # The sender goes on while the bot is down: a command lands in the outage.
        await async_wait_until(lambda: sent > sent_at_kill or sender.done(), 10 * UNIT)
        second = await BotProcess.start(*args, env=env)
        await sender
        await second.wait_for_log("bot ready")
        await async_wait_until(
            lambda: {*answers(h, "runner")} >= {str(i) for i in range(total)},
            timeout=30 * UNIT,
            what="every command answered",
        )
        # Lanes keep order, so one more command answered means nothing else is on its way.
        await h.send("!ping end")
        await async_wait_until(lambda: "end" in answers(h, "runner"), timeout=10 * UNIT)
    finally:
        first.kill()
        if second is not None:
            second.proc.send_signal(signal.SIGTERM)
            await second.wait()
    got = answers(h, "runner")
    assert killed_at < total, "the kill came too late to test anything"
    assert sorted(got[:-1], key=int) == [str(i) for i in range(total)], got  # once each
    assert got[:-1] == sorted(got[:-1], key=int)  # and in order
    assert second is not None and "Traceback" not in second.log


async def test_a_stopped_bot_answers_what_was_sent_while_it_was_down(
    concord_harness: Harness, tmp_path: Path
) -> None:
    h = concord_harness
    state = str(tmp_path / "bot.db")
    seen: list[tuple[str, bool]] = []

    def make() -> Bot:
        bot = Bot(state=state)
        strikes = bot.store("strikes")

        @bot.command("strike")
        async def strike(ctx: Context) -> None:
            n = await strikes.update(ctx.args[0], lambda v: (v or 0) + 1)
            seen.append((ctx.args[0], ctx.recovered))
            await ctx.reply(f"{ctx.args[0]} has {n}")

        return bot

    bot = await h.start_bot(make())
    await h.ask("!strike bob", match="^bob has 1$")
    await h.stop_bot(bot)
    for _ in range(3):
        await h.send("!strike bob")  # nobody listening
    await h.start_bot(make())
    for n in (2, 3, 4):
        await h.expect_reply(match=f"^bob has {n}$")
    await h.ask("!strike bob", match="^bob has 5$")
    assert seen == [("bob", False), ("bob", True), ("bob", True), ("bob", True), ("bob", False)]


def _readme_state_bot() -> str:
    readme = Path(__file__).resolve().parents[2] / "README.md"
    section = readme.read_text().split("\n### State, schedules and restarts\n", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)[0]


async def test_the_readme_state_example(concord_harness: Harness, tmp_path: Path) -> None:
    from concordctl.cli.run import load_bot

    h = concord_harness
    code = _readme_state_bot()
    assert 'state="modbot.db"' in code
    (tmp_path / "modbot.py").write_text(
        code.replace('state="modbot.db"', f"state={str(tmp_path / 'modbot.db')!r}")
    )
    bot, _ = load_bot(str(tmp_path / "modbot.py"))
    await h.start_bot(bot)
    assert (await h.ask("!strike bob")).content == "bob has 1 strike(s)"
    assert (await h.ask("!strike bob")).content == "bob has 2 strike(s)"
    await h.run_job("standup")
    await h.expect_reply(match="^stand-up time$")
    assert (await h.ask("!remind 10 lunch with bob")).content == "in 10 min"
    (pending,) = [job for key, job in bot.jobs.items() if key.startswith("remind-")]
    assert pending.runs == 0 and pending.next_run is not None
    h.advance(minutes=10)
    await h.expect_reply(match="^lunch with bob$")
    await h.stop_bot(bot)
    again, _ = load_bot(str(tmp_path / "modbot.py"))  # restarted: the store is still there
    await h.start_bot(again)
    assert (await h.ask("!strike bob")).content == "bob has 3 strike(s)"
