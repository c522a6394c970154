"""Commands on chats: send, edit, delete, react, typing, history, search."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from concordctl.cli.app import app
from concordctl.cli.args import channel_ref
from concordctl.cli.options import (
    CaCertOption,
    InsecureOption,
    JsonOption,
    ProfileOption,
    ServerOption,
    client_from_options,
    rest_from_options,
    run_async,
)

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.client import Client
    from concordctl.protocol import Chat

ChannelArg = Annotated[str, typer.Argument(help="Channel id or name (with or without #).")]
ChatIdArg = Annotated[int, typer.Argument(help="The chat's id (shown in [brackets] by history).")]
ThreadOption = Annotated[
    int | None,
    typer.Option("--thread", help="Thread id (a chat id) to post in.", show_default=False),
]
LimitOption = Annotated[
    int, typer.Option("--limit", "-n", min=1, help="How many chats (pages as needed).")
]


# The most chats asked of the server in one request.
_ONE_PAGE = 100


def _note(message: str) -> None:
    print(message, file=sys.stderr)


@app.command()
def send(
    channel: ChannelArg,
    text: Annotated[
        str | None,
        typer.Argument(help="The message; missing or '-': read all of stdin (one chat)."),
    ] = None,
    thread: ThreadOption = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="Idempotency key: if you already sent a chat with this key in this channel, "
            "edit it instead of posting again. The chat ends with a visible line '🔑 KEY'.",
            show_default=False,
        ),
    ] = None,
    server: ServerOption = None,
    profile: ProfileOption = None,
    ca_cert: CaCertOption = None,
    insecure: InsecureOption = False,
    json: JsonOption = False,
) -> None:
    """Send a chat; prints its id (the whole chat with --json).

    \b
    Examples:
      concordctl send general "deploy of v1.2 done"
      make test 2>&1 | tail -20 | concordctl send '#ci'
      concordctl send releases "v1.2: building" --key release-v1.2
    """
    from concordctl.cli.args import read_text

    content = read_text(text)
    if key is not None:
        from concordctl.cli.idempotency import validate_key

        validate_key(key)

    async def body() -> None:
        if key is None:
            # Bare REST: a CI notification should not pay for the websocket stack.
            from concordctl.cli.names import channel_id

            async with rest_from_options(server, profile, ca_cert, insecure) as rest:
                chat = await rest.send_chat(
                    await channel_id(rest, channel), content, thread_id=thread
                )
        else:
            async with client_from_options(server, profile, ca_cert, insecure) as c:
                chat = await _send_keyed(c, channel, content, key, thread)
        if json:
            from concordctl.cli.render import print_json

            print_json(chat)
        else:
            print(chat.id)

    run_async(body())


async def _send_keyed(c: Client, channel: str, text: str, key: str, thread: int | None) -> Chat:
    from concordctl.cli.idempotency import find_keyed_chat, with_marker

    chan = await c.channel(channel_ref(channel))
    me = await c.me()
    content = with_marker(text, key)
    existing = await find_keyed_chat(c, chan.id, me.id, key)
    if existing is None:
        return await c.send_chat(chan.id, content, thread_id=thread)
    if existing.content == content:
        _note(f"concordctl: chat {existing.id} with key {key!r} is already up to date")
        return existing
    _note(f"concordctl: key {key!r} already sent as chat {existing.id}: edited it")
    return await c.edit_chat(existing.id, content)


@app.command()
def edit(
    chat_id: ChatIdArg,
    text: Annotated[str | None, typer.Argument(help="New content; missing or '-': stdin.")] = None,
    server: ServerOption = None,
    profile: ProfileOption = None,
    ca_cert: CaCertOption = None,
    insecure: InsecureOption = False,
    json: JsonOption = False,
) -> None:
    """Replace the content of one of your chats.

    \b
    Example:
      concordctl edit 8501928463962112 "deploy of v1.2 done (rolled back)"
    """
    from concordctl.cli.args import read_text

    content = read_text(text)

    async def body() -> None:
        async with client_from_options(server, profile, ca_cert, insecure) as c:
            chat = await c.edit_chat(chat_id, content)
        if json:
            from concordctl.cli.render import print_json

            print_json(chat)
        else:
            _note(f"edited chat {chat.id}")

    run_async(body())


@app.command()
def delete(
    chat_id: ChatIdArg,
    server: ServerOption = None,
    profile: ProfileOption = None,
    ca_cert: CaCertOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Delete one of your chats.

    \b
    Example:
      concordctl delete 8501928463962112
    """

    async def body() -> None:
        async with client_from_options(server, profile, ca_cert, insecure) as c:
            await c.delete_chat(chat_id)
        _note(f"deleted chat {chat_id}")

    run_async(body())


@app.command()
def react(
    chat_id: ChatIdArg,
    reaction: Annotated[str, typer.Argument(help="Any text, usually an emoji.")],
    remove: Annotated[bool, typer.Option("--remove", help="Take your reaction back.")] = False,
    server: ServerOption = None,
    profile: ProfileOption = None,
    ca_cert: CaCertOption = None,
    insecure: InsecureOption = False,
    json: JsonOption = False,
) -> None:
    """React to a chat (or take the reaction back with --remove).

    With --json, prints the chat's reactions afterwards.

    \b
    Examples:
      concordctl react 8501928463962112 ✅
      concordctl react 8501928463962112 ✅ --remove
    """

    async def body() -> None:
        async with client_from_options(server, profile, ca_cert, insecure) as c:
            if remove:
                await c.unreact(chat_id, reaction)
            else:
                await c.react(chat_id, reaction)
            if json:
                from concordctl.cli.render import print_json

                print_json(await c.reactions(chat_id))
        if not json:
            _note(f"{'removed' if remove else 'added'} {reaction} on chat {chat_id}")

    run_async(body())


@app.command()
def typing(
    channel: ChannelArg,
    thread: ThreadOption = None,
    server: ServerOption = None,
    profile: ProfileOption = None,
    ca_cert: CaCertOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Show others that you are typing in a channel (sent over the websocket).

    \b
    Example:
      concordctl typing general
    """

    async def body() -> None:
        async with client_from_options(server, profile, ca_cert, insecure) as c:
            await c.typing(channel_ref(channel), thread_id=thread)

    run_async(body())


@app.command()
def history(
    channel: ChannelArg,
    limit: LimitOption = 20,
    server: ServerOption = None,
    profile: ProfileOption = None,
    ca_cert: CaCertOption = None,
    insecure: InsecureOption = False,
    json: JsonOption = False,
) -> None:
    """Show the latest chats of a channel, oldest first.

    With --json: the server's array of chats, newest first, as the API sends it.

    \b
    Examples:
      concordctl history general --limit 50
      concordctl history '#ci' --json | jq -r '.[].content'
    """

    async def body() -> None:
        async with client_from_options(server, profile, ca_cert, insecure) as c:
            if limit <= _ONE_PAGE:
                chats = await c.latest_chats(channel_ref(channel), limit=limit)
            else:  # more than one request: page through the search endpoint
                chats = await c.search_chats(
                    channel=channel_ref(channel), limit=limit, page_size=_ONE_PAGE
                )
            await _print_chats(c, chats[:limit], json)

    run_async(body())


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="Words to find in the content.")] = None,
    channel: Annotated[
        str | None, typer.Option("--channel", "-c", help="Only this channel (id or name).")
    ] = None,
    author: Annotated[
        str | None, typer.Option("--author", "-a", help="Only chats by this user (id or name).")
    ] = None,
    before: Annotated[
        str | None,
        typer.Option("--before", help="Only chats before this time: 10m, 2h, 1d, ISO 8601."),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option("--after", help="Only chats after this time: 10m, 2h, 1d, ISO 8601."),
    ] = None,
    thread: Annotated[
        int | None, typer.Option("--thread", help="Only chats in this thread.", show_default=False)
    ] = None,
    limit: LimitOption = 50,
    server: ServerOption = None,
    profile: ProfileOption = None,
    ca_cert: CaCertOption = None,
    insecure: InsecureOption = False,
    json: JsonOption = False,
) -> None:
    """Search chats by words, channel, author and time, oldest first.

    With --json: the server's array of chats, newest first, as the API sends it.

    \b
    Examples:
      concordctl search deploy --channel releases --after 1d
      concordctl search --author alice --after 2026-11-25T09:00 --before 2h --json
    """
    from concordctl.cli.args import parse_time

    before_ms = parse_time(before, option="--before") if before is not None else None
    after_ms = parse_time(after, option="--after") if after is not None else None

    async def body() -> None:
        async with client_from_options(server, profile, ca_cert, insecure) as c:
            author_ref: int | str | None = None
            if author is not None:
                author_ref = int(author) if author.isdigit() else (await c.user(author)).id
            chats = await c.search_chats(
                query,
                channel=channel_ref(channel) if channel is not None else None,
                author=author_ref,
                thread_id=thread,
                before=before_ms,
                after=after_ms,
                limit=limit,
            )
            await _print_chats(c, chats[:limit], json)

    run_async(body())


async def _print_chats(c: Client, chats: list[Chat], json: bool) -> None:
    """``chats`` (newest first, as the server sends them) in the chosen mode."""
    from concordctl.cli import render

    if json:
        render.print_json(chats)
        return
    from concordctl.cli.names import names_for_chats

    names = await names_for_chats(c, chats)
    if not chats:
        _note("concordctl: no chats")
    render.print_chats(reversed(chats), names)
