"""The README's bot runs, and its example test passes when a user runs pytest on it."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

from botkit import cli_env

from concordctl.cli.run import load_bot
from concordctl.testing import Harness

README = Path(__file__).resolve().parents[2] / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_readme_bot_is_ten_lines() -> None:
    bot_code = _python_blocks(_section("Bots"))[0]
    assert len(bot_code.strip().splitlines()) <= 11  # ten lines of code, blank lines aside
    assert sum(1 for line in bot_code.splitlines() if line.strip()) <= 10


async def test_the_readme_bot_answers(concord_harness: Harness, tmp_path: Path) -> None:
    (tmp_path / "bot.py").write_text(_python_blocks(_section("Bots"))[0])
    bot, _ = load_bot(str(tmp_path / "bot.py"))
    await concord_harness.start_bot(bot)
    assert (await concord_harness.ask("!ping")).content == "pong"


async def test_the_readme_example_test_passes_under_pytest(tmp_path: Path) -> None:
    """Run as a bot author would: their own directory, pytest, the plugin via its entry point."""
    (tmp_path / "bot.py").write_text(_python_blocks(_section("Bots"))[0])
    (tmp_path / "test_bot.py").write_text(_python_blocks(_section("Testing your bots"))[0])
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        str(tmp_path),
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "2 passed" in text


def _named_block(name: str) -> str:
    for block in _python_blocks(_section("Bots")):
        if block.startswith(f"# {name}\n"):
            return block
    raise AssertionError(f"no {name} block in the README's Bots section")


def _load(tmp_path: Path, name: str) -> Any:
    (tmp_path / name).write_text(_named_block(name))
    bot, _ = load_bot(str(tmp_path / name))
    return bot


async def test_the_readme_deploy_bot(concord_harness: Harness, tmp_path: Path) -> None:
    h = concord_harness
    for name in ("alice", "bob"):  # author= names are looked up when the bot starts
        await h.register(name)
    await h.start_bot(_load(tmp_path, "deploy_bot.py"), raise_handler_errors=False)
    usage = "usage: !deploy <service> [count] [--env prod|staging] [--force]"
    assert (await h.ask("!deploy web 3 --env prod --force")).content == (
        "deploying web x3 to prod (forced)"
    )
    assert (await h.ask("!deploy api", as_user="bob")).content == "deploying api x1 to staging"
    assert (await h.ask("!deploy web")).content == "⏳ !deploy again in 30 s"
    assert (await h.ask("!deploy nope", as_user="bob")).content == (
        f"service: 'nope' is not one of web, api\n{usage}"
    )
    assert (await h.ask("!deploy web", as_user="carol")).content.startswith("⛔ only alice")
    assert (await h.ask("!freeze yes")).content == "deploys frozen"
    assert (await h.ask("!deploy web", as_user="bob")).content.startswith("⛔")
    assert (await h.ask("!help deploy")).content == (
        "!deploy <service> [count] [--env prod|staging] [--force]\n"
        "Deploy a service: !deploy web 3 --env prod"
    )
    report = await h.ask("!rollback web", as_user="bob", match="🔥")
    assert "rollback" in report.content and "no previous release of web" in report.content


async def test_the_readme_moderation_bot(concord_harness: Harness, tmp_path: Path) -> None:
    h = concord_harness
    for name in ("alice", "bob"):
        await h.register(name)
    await h.start_bot(_load(tmp_path, "moderation_bot.py"))
    assert (await h.ask("!warn @bob stop   spamming, please")).content == (
        "⚠️ bob: stop   spamming, please (warning 1)"
    )
    assert (await h.ask("!warn bob again")).content.endswith("(warning 2)")
    assert (await h.ask("!warn alice hm", as_user="bob")).content == "only moderators may warn"
    assert (await h.ask("!warn nobody x")).content.startswith("who: no user 'nobody'\nusage:")
    assert (await h.ask("!mute bob 10m")).content == "🔇 bob muted for 10 min"
    helped = (await h.ask("!help")).content
    assert "!warn" in helped and "!mute" not in helped
    spam = await h.send("BUY NOW cheap pills", as_user="bob")
    await h.expect_reaction(spam, "🚫")


async def test_the_readme_standup_bot(concord_harness: Harness, tmp_path: Path) -> None:
    h = concord_harness
    await h.start_bot(_load(tmp_path, "standup_bot.py"))
    assert (await h.ask("!summary")).content == "no stand-ups yet"
    mine = await h.send("!standup yesterday: 'the parser'; today: \\o/ reviews")
    await h.expect_reaction(mine, "✅")
    theirs = await h.send("!su fixed it's bug", as_user="bob")
    await h.expect_reaction(theirs, "✅")
    assert (await h.ask("!summary")).content == (
        "alice: yesterday: 'the parser'; today: \\o/ reviews\nbob: fixed it's bug"
    )
