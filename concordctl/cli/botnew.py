"""``concordctl bot new NAME``: a starter bot and its test, ready to run."""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from typing import Annotated

import typer

from concordctl.cli.app import app
from concordctl.cli.options import note

bot_app = typer.Typer(name="bot", help="Bot authoring: `bot new NAME` writes a starter bot.")
app.add_typer(bot_app)

BOT_TEMPLATE = '''\
"""{name}: a concordctl bot. Run it with `concordctl run {name}.py`."""

from concordctl import Bot, Context

bot = Bot(prefix="!")


@bot.command("ping")
async def ping(ctx: Context) -> None:
    """Answer !ping with pong."""
    await ctx.reply("pong")


@bot.command("echo")
async def echo(ctx: Context) -> None:
    """Say the words back: !echo hello there."""
    await ctx.reply(" ".join(ctx.args) or "(nothing to echo)")


if __name__ == "__main__":
    bot.run()
'''

TEST_TEMPLATE = '''\
"""Tests of {name}.py against a real embedded server (concordctl's pytest fixtures).

Run: python -m pytest test_{name}.py
"""

from __future__ import annotations

import pytest

from {module} import bot

pytestmark = pytest.mark.asyncio


async def test_ping_answers_pong(concord_harness) -> None:
    await concord_harness.start_bot(bot)
    reply = await concord_harness.ask("!ping", as_user="alice")
    assert reply.content == "pong"


async def test_echo_says_the_words_back(concord_harness) -> None:
    await concord_harness.start_bot(bot)
    reply = await concord_harness.ask("!echo hello there", as_user="alice")
    assert reply.content == "hello there"
'''


@bot_app.command("new")
def bot_new(
    name: Annotated[
        str, typer.Argument(help="The bot's name: NAME.py and test_NAME.py.", metavar="NAME")
    ],
    directory: Annotated[
        Path, typer.Option("--dir", metavar="DIR", help="Where to write the files.")
    ] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write NAME.py (a bot with !ping and !echo) and test_NAME.py (its pytest tests).

    \\b
    Example:
      concordctl bot new greeter && concordctl run greeter.py
    """
    from concordctl.errors import UsageError

    module = name.removesuffix(".py")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", module) or keyword.iskeyword(module):
        raise UsageError(
            f"bot new: {name!r} is not a Python module name",
            hint="use letters, digits and _, e.g. greeter or deploy_bot",
        )
    if not directory.is_dir():
        raise UsageError(f"bot new: {directory} is not a directory")
    files = {
        directory / f"{module}.py": BOT_TEMPLATE.format(name=module),
        directory / f"test_{module}.py": TEST_TEMPLATE.format(name=module, module=module),
    }
    existing = [str(p) for p in files if p.exists()]
    if existing and not force:
        raise UsageError(
            f"bot new: {', '.join(existing)} already exists", hint="pick another name or --force"
        )
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    bot_file, test_file = files
    note(
        f"wrote {bot_file} and {test_file}; run the bot with `concordctl run {bot_file}` "
        f"and its tests with `python -m pytest {test_file}`"
    )
