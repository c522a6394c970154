"""The README's bot runs, and its example test passes when a user runs pytest on it."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

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
