"""``concordctl run`` as a user runs it: a subprocess, signals, reload, replay."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
from botkit import BotProcess, chat, cli_env

from concordctl.protocol import encode_event
from concordctl.testing import Harness
from tests.helpers.timing import UNIT, async_wait_until

BOT = """
from concordctl import Bot, Context

bot = Bot()

@bot.command("ping")
async def ping(ctx: Context) -> None:
    await ctx.reply("{answer}")

@bot.on_shutdown
def bye() -> None:
    print("on_shutdown ran", flush=True)
"""


async def _env_for(h: Harness, tmp_path: Path) -> dict[str, str]:
    password = await h.register("runner")
    return cli_env(
        tmp_path,
        CONCORD_SERVER=h.url,
        CONCORD_USERNAME="runner",
        CONCORD_PASSWORD=password,
    )


async def test_run_answers_a_command_and_stops_on_sigterm_with_exit_0(
    concord_harness: Harness, tmp_path: Path
) -> None:
    h = concord_harness
    bot_file = tmp_path / "bot.py"
    bot_file.write_text(BOT.format(answer="pong"))
    health = tmp_path / "alive"
    proc = await BotProcess.start(
        "run", str(bot_file), "--health-file", str(health), env=await _env_for(h, tmp_path)
    )
    try:
        await proc.wait_for_log("bot ready")
        sent = await h.send("!ping")
        assert (await h.expect_reply(sent, author="runner", timeout=10)).content == "pong"
        assert health.exists()
        proc.proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0, proc.log
    finally:
        proc.kill()
    assert "SIGTERM received: stopping" in proc.log
    assert "on_shutdown ran" in proc.stdout
    assert "Traceback" not in proc.log and "token=" not in proc.log
    assert not health.exists()


async def test_a_second_ctrl_c_exits_130_at_once(concord_harness: Harness, tmp_path: Path) -> None:
    h = concord_harness
    bot_file = tmp_path / "stuck.py"
    bot_file.write_text(
        textwrap.dedent(
            """
            import time
            from concordctl import Bot

            bot = Bot(grace=60)

            @bot.command("stuck")
            def stuck(ctx) -> None:
                print("stuck handler started", flush=True)
                time.sleep(60)  # the scenario, not a wait: a thread nothing can cancel
            """
        )
    )
    proc = await BotProcess.start("run", str(bot_file), env=await _env_for(h, tmp_path))
    try:
        await proc.wait_for_log("bot ready")
        await h.send("!stuck")
        await async_wait_until(lambda: "stuck handler started" in proc.stdout, 10 * UNIT)
        proc.proc.send_signal(signal.SIGINT)
        await proc.wait_for_log("SIGINT received: stopping")
        proc.proc.send_signal(signal.SIGINT)
        assert await proc.wait() == 130
    finally:
        proc.kill()


async def test_reload_swaps_in_edited_handlers_and_survives_a_broken_edit(
    concord_harness: Harness, tmp_path: Path
) -> None:
    h = concord_harness
    bot_file = tmp_path / "bot.py"
    bot_file.write_text(BOT.format(answer="v1"))
    v1_mtime = bot_file.stat().st_mtime_ns
    # As on a user's machine: Python writes __pycache__ (a test run may not).
    env = {k: v for k, v in (await _env_for(h, tmp_path)).items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = await BotProcess.start("run", str(bot_file), "--reload", env=env)
    try:
        await proc.wait_for_log("bot ready")
        assert (await h.ask("!ping", author="runner", timeout=10)).content == "v1"

        bot_file.write_text("from concordctl import Bot\nbot = Bot(\n")  # a syntax error
        await proc.wait_for_log("reload failed")
        assert (await h.ask("!ping", author="runner", timeout=10)).content == "v1"

        # The same length and the same second as v1: a cached .pyc of v1 would pass
        # for v2's, so the reload must compile the source.
        bot_file.write_text(BOT.format(answer="v2"))
        os.utime(bot_file, ns=(v1_mtime, v1_mtime))
        await proc.wait_for_log("reloaded bot.py")
        assert (await h.ask("!ping", author="runner", timeout=10)).content == "v2"
        assert proc.log.count("stream connecting") <= 1  # the connection was kept
        proc.proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
    finally:
        proc.kill()
    assert "cannot load" in proc.log and "bot.py:2: SyntaxError" in proc.log, proc.log


def _recording(path: Path, *contents: str) -> None:
    lines = [encode_event(chat(c, channel=7)).decode() for c in contents]
    lines.insert(1, '{"type": "concordctl.gap", "since": 1, "until": 2}')
    lines.insert(2, "not json at all")
    path.write_text("\n".join(lines) + "\n")


async def test_replay_dry_run_prints_writes_without_a_server(tmp_path: Path) -> None:
    bot_file = tmp_path / "bot.py"
    bot_file.write_text(BOT.format(answer="pong"))
    rec = tmp_path / "yesterday.ndjson"
    _recording(rec, "!ping", "hello", "!ping")
    proc = await BotProcess.start(
        "run", str(bot_file), "--replay", str(rec), "--dry-run", env=cli_env(tmp_path)
    )
    assert await proc.wait() == 0, proc.log
    assert proc.stdout.count("dry-run: send to channel 7: pong") == 2
    assert "replayed 4 events" in proc.log and "line 3 skipped" in proc.log


async def test_dead_letters_are_written_and_replay_to_the_fixed_handler(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text(
        textwrap.dedent(
            """
            from concordctl import Bot, ChatSent

            bot = Bot()

            @bot.on("chat_sent")
            async def parse(ev: ChatSent) -> None:
                int(ev.chat.content)  # fails on anything but a number

            @bot.on("chat_sent")
            async def count(ev: ChatSent) -> None:
                await bot.client.send_chat(ev.chat.channel_id, "counted")
            """
        )
    )
    rec = tmp_path / "rec.ndjson"
    _recording(rec, "12", "twelve")
    dead = tmp_path / "dead.ndjson"
    env = cli_env(tmp_path)
    proc = await BotProcess.start(
        "run", str(broken), "--replay", str(rec), "--dry-run", "--dead-letters", str(dead), env=env
    )
    assert await proc.wait() == 1, proc.log  # a handler failed: the replay says so
    assert "--replay: 1 handler failure in" in proc.log
    assert "parse raised on chat_sent" in proc.log and "ValueError" in proc.log
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert len(letters) == 1 and letters[0]["chat"]["content"] == "twelve"
    assert letters[0]["concordctlDeadLetter"]["handler"] == "parse"

    fixed = tmp_path / "fixed.py"
    fixed.write_text(
        broken.read_text().replace(
            "int(ev.chat.content)  # fails on anything but a number",
            'await bot.client.send_chat(ev.chat.channel_id, "parsed " + ev.chat.content)',
        )
    )
    proc = await BotProcess.start("run", str(fixed), "--replay", str(dead), "--dry-run", env=env)
    assert await proc.wait() == 0, proc.log
    # only the handler that failed sees its dead letter again
    assert proc.stdout == ["dry-run: send to channel 7: parsed twelve"]


async def test_module_attr_target_and_clear_load_errors(tmp_path: Path) -> None:
    pkg = tmp_path / "mybots"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "main.py").write_text(BOT.format(answer="from a module") + "\nthe_bot = bot\n")
    (pkg / "broken.py").write_text("from concordctl import Bot\nbot = Bot()\nundefined_name\n")
    (pkg / "empty.py").write_text("x = 1\n")
    rec = tmp_path / "rec.ndjson"
    _recording(rec, "!ping")
    env = cli_env(tmp_path)
    cwd = str(tmp_path)

    proc = await BotProcess.start(
        "run", "mybots.main:the_bot", "--replay", str(rec), "--dry-run", env=env, cwd=cwd
    )
    assert await proc.wait() == 0, proc.log
    assert proc.stdout == ["dry-run: send to channel 7: from a module", "on_shutdown ran"]

    proc = await BotProcess.start("run", str(pkg / "broken.py"), env=env, cwd=cwd)
    assert await proc.wait() == 1
    assert "Traceback" not in proc.log
    assert "cannot load" in proc.log and "broken.py:3: NameError" in proc.log

    proc = await BotProcess.start("run", str(pkg / "empty.py"), env=env, cwd=cwd)
    assert await proc.wait() == 2
    assert "no Bot in" in proc.log


@pytest.mark.parametrize("args", [["--dry-run"], ["--attr", "nope"]])
async def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    bot_file = tmp_path / "bot.py"
    bot_file.write_text(BOT.format(answer="x"))
    proc = await BotProcess.start("run", str(bot_file), *args, env=cli_env(tmp_path))
    assert await proc.wait() == 2


async def test_python_bot_py_runs_the_bot_and_ctrl_c_stops_it_with_exit_0(
    concord_harness: Harness, tmp_path: Path
) -> None:
    h = concord_harness
    bot_file = tmp_path / "bot.py"
    bot_file.write_text(BOT.format(answer="pong from python") + "\nbot.run()\n")
    env = await _env_for(h, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(bot_file),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    runner = BotProcess(proc)
    try:
        await runner.wait_for_log("bot ready")
        assert (await h.ask("!ping", author="runner", timeout=10)).content == "pong from python"
        proc.send_signal(signal.SIGINT)
        assert await runner.wait() == 0, runner.log
    finally:
        runner.kill()
    assert "on_shutdown ran" in runner.stdout


async def test_bad_credentials_are_one_clear_line_and_exit_3(
    concord_harness: Harness, tmp_path: Path
) -> None:
    h = concord_harness
    bot_file = tmp_path / "bot.py"
    bot_file.write_text(BOT.format(answer="x"))
    env = await _env_for(h, tmp_path)
    env["CONCORD_PASSWORD"] = "wrong-password"
    proc = await BotProcess.start("run", str(bot_file), env=env)
    assert await proc.wait() == 3, proc.log
    assert "Traceback" not in proc.log and "wrong-password" not in proc.log


def test_reloading_a_module_target_never_runs_its_stale_bytecode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concordctl.cli.run import load_bot

    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as on a user's machine
    monkeypatch.syspath_prepend(str(tmp_path))
    source = tmp_path / "reloadedbot.py"
    source.write_text(BOT.format(answer="v1"))
    mtime = source.stat().st_mtime_ns
    try:
        load_bot("reloadedbot:bot")
        first = sys.modules["reloadedbot"]
        assert Path(importlib.util.cache_from_source(str(source))).exists()
        # The same length and second as v1: its .pyc would pass for this file's.
        source.write_text(BOT.format(answer="v2"))
        os.utime(source, ns=(mtime, mtime))
        load_bot("reloadedbot:bot", reload=True)
        assert sys.modules["reloadedbot"] is first  # reloaded in place, as importlib does
        assert "v2" in first.ping.__code__.co_consts
    finally:
        sys.modules.pop("reloadedbot", None)
