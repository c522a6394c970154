"""``concordctl send`` without Typer: the CI notification's start-up, measured.

A CI step that posts one chat pays the whole start-up of the command line
each time, and Typer's import and command building are a third of it
(``tests/benchmarks/bench_cli.py``). The common shapes of ``send`` (a
channel, a text or stdin, ``--thread``, ``--json``, ``--server``,
``--profile``, ``--timeout``) are parsed here and run through the very same
:class:`~concordctl.cli.connection.Connection` and :func:`send_plain` as the
full command; anything else (``--key``, ``--jq``, ``--help``, an unknown
flag, a value that needs checking) returns None and goes to Typer, which
gives the usual help and messages.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from concordctl.errors import ConcordError

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.client import Client
    from concordctl.protocol import Chat

__all__ = ["send_plain", "try_send"]

_VALUE_FLAGS = {"--server": "server", "-s": "server", "--profile": "profile", "-p": "profile",
                "--thread": "thread", "--timeout": "timeout"}  # fmt: skip


async def send_plain(c: Client, channel: str, content: str, thread: int | None) -> Chat:
    from concordctl.errors import BadRequest, NotFound

    cid = await c.channel_id(channel)
    try:
        return await c.send_chat(cid, content, thread_id=thread)
    except BadRequest:
        # The contract answers an unknown channel with 400: say which.
        try:
            await c.channel(cid)
        except NotFound:
            raise NotFound(
                f"no channel with id {cid}", hint="list them with `concordctl channels`"
            ) from None
        raise


def _parse(args: Sequence[str]) -> dict[str, str | bool] | None:
    """The options and positionals of a simple ``send``, or None."""
    found: dict[str, str | bool] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--json":
            found["json"] = True
        elif arg in _VALUE_FLAGS and i + 1 < len(args):
            found[_VALUE_FLAGS[arg]] = args[i + 1]
            i += 1
        elif arg.startswith("-") and arg != "-":
            return None  # --key, --help, --jq, --flag=value, --: Typer's
        else:
            positional.append(arg)
        i += 1
    if not 1 <= len(positional) <= 2:
        return None
    found["channel"] = positional[0]
    if len(positional) == 2:
        found["text"] = positional[1]
    for name in ("thread", "timeout"):
        value = found.get(name)
        if isinstance(value, str):
            try:
                if (int(value) if name == "thread" else float(value)) < 0:
                    return None
            except ValueError:
                return None  # Typer says what is wrong with it
    return found


def try_send(args: Sequence[str]) -> int | None:
    """Run ``concordctl send ARGS`` if it is a simple one; its exit code, or None."""
    parsed = _parse(args)
    if parsed is None:
        return None
    from concordctl.cli.args import read_text
    from concordctl.cli.connection import Connection
    from concordctl.cli.failure import error_line

    conn = Connection(
        server=str(parsed["server"]) if "server" in parsed else None,
        profile=str(parsed["profile"]) if "profile" in parsed else None,
        timeout=float(parsed["timeout"]) if "timeout" in parsed else None,
        json=bool(parsed.get("json")),
        command="send",
    )
    thread = int(parsed["thread"]) if "thread" in parsed else None
    channel = str(parsed["channel"])
    try:
        content = read_text(str(parsed["text"]) if "text" in parsed else None)

        async def body(c: Client) -> None:
            chat = await send_plain(c, channel, content, thread)
            conn.emit(chat, lambda: print(chat.id))

        conn.run(body)
    except ConcordError as exc:
        print(f"concordctl: {error_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("concordctl: interrupted", file=sys.stderr)
        return 130
    sys.stdout.flush()
    return 0
