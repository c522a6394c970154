"""Three ``concordctl run`` processes on one PostgreSQL state are one bot."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path

import psycopg
from botkit import BotProcess, cli_env

from concordctl.protocol import ChatSent
from concordctl.testing import Harness
from tests.helpers.timing import UNIT, async_wait_until

BOT = """
import asyncio, os, time
from concordctl import Bot, Context

bot = Bot(grace=1, lease=2, send_rate=0)  # claims and jobs move after 2 s; replies unpaced
ticks = bot.store("ticks")

@bot.command("ping")
async def ping(ctx: Context) -> None:
    await asyncio.sleep(0.01)  # the scenario: a kill can land inside a handler
    await ctx.reply(f"pong {ctx.args[0]}")

@bot.every(seconds=0.2)
async def tick() -> None:
    await ticks.update("log", lambda v: (v or []) + [[os.getpid(), time.time()]])
"""


def answers(h: Harness) -> list[str]:
    uid = h.user_id("replica")
    out = []
    for ev in h.events:
        if isinstance(ev, ChatSent) and ev.chat.author_id == uid:
            m = re.fullmatch(r"pong (\S+)", ev.chat.content)
            if m:
                out.append(m[1])
    return out


def tick_log(url: str) -> list[tuple[int, float]]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT value FROM concordctl_state WHERE ns = 'ticks' AND key = 'log'"
        ).fetchone()
    return [] if row is None else [(int(p), float(t)) for p, t in json.loads(row[0])]


async def test_three_replicas_answer_each_command_once_through_a_kill(
    concord_harness: Harness, tmp_path: Path, postgres_url: str
) -> None:
    h = concord_harness
    password = await h.register("replica")
    env = cli_env(
        tmp_path, CONCORD_SERVER=h.url, CONCORD_USERNAME="replica", CONCORD_PASSWORD=password
    )
    bot_file = tmp_path / "bot.py"
    bot_file.write_text(BOT)
    procs = [
        await BotProcess.start("run", str(bot_file), "--state", postgres_url, env=env)
        for _ in range(3)
    ]
    total = 200
    try:
        for p in procs:
            await p.wait_for_log("bot ready", within=30 * UNIT)
        await async_wait_until(lambda: len(tick_log(postgres_url)) >= 3, timeout=10 * UNIT)
        holder = tick_log(postgres_url)[-1][0]
        victim = next(p for p in procs if p.proc.pid == holder)  # kill the job's holder

        async def keep_sending() -> None:
            for i in range(total):
                await h.send(f"!ping {i}")
                await asyncio.sleep(
                    0.01 * UNIT
                )  # the scenario: commands keep coming through the kill

        sender = asyncio.create_task(keep_sending())
        await async_wait_until(lambda: len(answers(h)) >= total // 3, timeout=30 * UNIT)
        victim.proc.send_signal(signal.SIGKILL)
        killed_wall = time.time()
        await victim.wait()
        killed_at = len(answers(h))
        await sender
        await async_wait_until(
            lambda: {*answers(h)} >= {str(i) for i in range(total)},
            timeout=40 * UNIT,
            what="every command answered",
        )
        # The periodic job moved to a survivor within the lease bound.
        await async_wait_until(
            lambda: tick_log(postgres_url)[-1][0] != holder, timeout=8 * UNIT, what="takeover"
        )
        await h.send("!ping end")
        await async_wait_until(lambda: "end" in answers(h), timeout=10 * UNIT)
    finally:
        for p in procs:
            if p.proc.returncode is None:
                p.proc.send_signal(signal.SIGTERM)
        for p in procs:
            await p.wait(within=30)
    got = answers(h)
    assert killed_at < total
    assert sorted(got[:-1], key=int) == [str(i) for i in range(total)], "each answered once"
    # Exactly one replica ran the job at a time: the holder, then one survivor,
    # which took over once the lease (2 s from the last beat, beats every 2/3 s)
    # ran out, and within a bound (a lease, a beat, a tick, slack).
    runs = tick_log(postgres_url)
    first_new = next(t for pid, t in runs if pid != holder)
    assert 2 * 2 / 3 * 0.9 <= first_new - killed_wall < 2 + 4 * UNIT
    holders = [pid for i, (pid, _) in enumerate(runs) if i == 0 or runs[i - 1][0] != pid]
    assert len(holders) == 2 and holders[0] == holder, holders
    survivors = {p.proc.pid for p in procs if p is not victim}
    assert holders[1] in survivors
    for p in procs:
        if p is not victim:
            assert "Traceback" not in p.log, p.log
