"""``concordctl demo``: the whole tool in under ten seconds, on a throwaway server.

Starts the embedded server on a free port with a database in a temporary
directory, registers two users, runs the example bot (``examples/echo_bot.py``
when the source tree is there, else a built-in copy) in this process, and
plays a short script (send, !ping, edit, react, typing, delete) while the
live tail renders every event. Before each step it prints the command a user
would type for it. Everything (server, bot, temporary directory) is gone when
it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from concordctl.cli.app import app
from concordctl.cli.options import run_async

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from concordctl.bot import Bot
    from concordctl.client import Client

# The pause between steps: long enough to read each event as the tail shows it,
# short enough for the whole demo to stay well under ten seconds.
_STEP = 0.5
# How long the end waits for the tail to show the last events.
_SETTLE_TIMEOUT = 10.0

_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "echo_bot.py"


@app.command()
def demo(
    pace: Annotated[
        float,
        typer.Option(
            "--pace",
            metavar="SECONDS",
            min=0,
            max=10,
            help="Pause between the steps; 0 runs them back to back (a quick smoke test).",
        ),
    ] = _STEP,
) -> None:
    """A demo of under ten seconds: embedded server, bot, live tail; leaves nothing behind.

    \b
    Examples:
      concordctl demo
      concordctl demo --pace 2     # slower, to present it
      concordctl demo --pace 0     # as fast as it goes
    """
    run_async(_demo(pace))


def _load_bot() -> Bot:
    """The Bot of examples/echo_bot.py, or a built-in one just like it."""
    from concordctl.bot import Bot

    if _EXAMPLE.is_file():
        spec = importlib.util.spec_from_file_location("concordctl_demo_bot", _EXAMPLE)
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            for value in vars(module).values():
                if isinstance(value, Bot):
                    return value
    from concordctl.bot import Context

    bot = Bot(prefix="!")

    @bot.command("ping")
    async def ping(ctx: Context) -> None:
        await ctx.reply("pong")

    @bot.command("echo")
    async def echo(ctx: Context) -> None:
        await ctx.reply(" ".join(ctx.args) or "(nothing to echo)")

    return bot


def _client(url: str, username: str, password: str) -> Client:
    # Explicit settings: the user's CONCORD_* variables and profile must not
    # leak into (or out to) the throwaway server.
    from concordctl.client import Client
    from concordctl.config import Settings

    return Client(settings=Settings(server=url, username=username, password=password))


async def _demo(pace: float) -> None:
    from concordctl.cli.output import stdout_console
    from concordctl.server import EmbeddedServer, ServerConfig

    console = stdout_console()
    workdir = Path(tempfile.mkdtemp(prefix="concordctl-demo-"))
    try:
        config = ServerConfig(
            host="127.0.0.1",
            port=0,
            db_path=workdir / "demo.db",
            admin_password=secrets.token_urlsafe(12),
            online_delay=0.1,
        )
        async with EmbeddedServer(config) as server:
            await _play(console, server.url, pace)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _say(console: Console, text: str) -> None:
    from rich.text import Text

    console.print(Text(text, style="bold"))


def _cmd(console: Console, command: str) -> None:
    from rich.text import Text

    console.print(Text("$ " + command, style="bold green"))


async def _play(console: Console, url: str, pace: float) -> None:
    from concordctl.cli.printer import Printer
    from concordctl.protocol import ChatDeleted, ChatSent

    _say(console, f"Embedded Concord server on {url} (temporary database).")
    alice_pw, bot_pw = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    async with _client(url, "", "") as anonymous:
        await anonymous.register("alice", alice_pw)
        await anonymous.register("pingbot", bot_pw)
    _cmd(console, f"concordctl serve --port {url.rsplit(':', 1)[1]} --db ./concord.db &")
    _cmd(console, "concordctl register --username alice")
    _cmd(console, f"concordctl login --server {url} --username alice")

    bot = _load_bot()
    tasks: list[asyncio.Task[Any]] = []
    async with _client(url, "alice", alice_pw) as alice, _client(url, "pingbot", bot_pw) as bots:
        source = "examples/echo_bot.py" if _EXAMPLE.is_file() else "a built-in echo bot"
        _cmd(console, "concordctl run examples/echo_bot.py &" + f"   # running {source}")
        tasks.append(asyncio.create_task(bot.serve(bots)))
        await asyncio.wait_for(bot.wait_ready(), 10)

        _cmd(console, "concordctl tail general &   # the lines below are its output")
        printer = Printer(alice, json=False)
        connected = asyncio.Event()
        shown: list[Any] = []  # the events the tail printed
        progress = asyncio.Event()  # set after each one

        def on_state(state: Any) -> None:
            if getattr(state, "state", "") == "connected":
                connected.set()

        async def tail() -> None:
            async for event in alice.events(channels=["general"], on_state=on_state):
                if event.type in ("user_status_updated", "user_joined"):
                    continue  # the bot coming online is noise here
                await printer.print(event)
                shown.append(event)
                progress.set()

        bot_id = (await bots.me()).id

        def settled(doomed: int) -> bool:
            """The deletion and both bot replies are on screen (they may come in any order)."""
            replies = sum(isinstance(e, ChatSent) and e.chat.author_id == bot_id for e in shown)
            deleted = any(isinstance(e, ChatDeleted) and e.chat_id == doomed for e in shown)
            return replies >= 2 and deleted

        tasks.append(asyncio.create_task(tail()))
        await asyncio.wait_for(connected.wait(), 10)
        doomed = await _script(console, alice, pace)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SETTLE_TIMEOUT):
                while not settled(doomed):
                    progress.clear()
                    await progress.wait()
        await asyncio.sleep(pace)

        _say(console, "Done. Everything above, by hand:")
        for line in (
            "concordctl serve &",
            "concordctl login --server http://127.0.0.1:8080 --username admin",
            "concordctl tail general",
            'concordctl send general "hello"        # prints the chat id',
            'concordctl edit ID "hello, edited"',
            "concordctl react ID ✅",
            "concordctl delete ID",
            "concordctl wait general --match '^approve' --timeout 600   # a CI gate",
        ):
            console.print("  " + line)
        bot.stop()
        for task in tasks[1:]:
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)


async def _script(console: Console, alice: Client, pace: float) -> int:
    """Play the steps; returns the id of the chat it deleted last."""

    async def step(command: str) -> None:
        await asyncio.sleep(pace)
        _cmd(console, command)

    await step('concordctl send general "hello from the demo"')
    hello = await alice.send_chat("general", "hello from the demo")
    await step("concordctl send general '!ping'")
    await alice.send_chat("general", "!ping")
    await step("concordctl send general '!echo it works'")
    await alice.send_chat("general", "!echo it works")
    await step(f'concordctl edit {hello.id} "hello from the demo (edited)"')
    await alice.edit_chat(hello.id, "hello from the demo (edited)")
    await step(f"concordctl react {hello.id} ✅")
    await alice.react(hello.id, "✅")
    await step("concordctl typing general")
    await alice.typing("general")
    await step('concordctl send general "this one will be deleted"')
    doomed = await alice.send_chat("general", "this one will be deleted")
    await step(f"concordctl delete {doomed.id}")
    await alice.delete_chat(doomed.id)
    sys.stdout.flush()
    return doomed.id
