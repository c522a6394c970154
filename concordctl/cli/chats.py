"""Commands on chats: send, edit, delete, react, typing, history, search."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from concordctl.cli.app import app
from concordctl.cli.complete import complete_channel, complete_user
from concordctl.cli.options import Connection, note, server_command

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.client import Client
    from concordctl.protocol import Chat

ChannelArg = Annotated[
    str,
    typer.Argument(
        help="Channel id or name (with or without #).",
        metavar="CHANNEL",
        autocompletion=complete_channel,
    ),
]
ChatIdArg = Annotated[
    int,
    typer.Argument(help="The chat's id (shown in [brackets] by history).", metavar="CHAT_ID"),
]
ThreadOption = Annotated[
    int | None,
    typer.Option("--thread", metavar="ID", help="Thread id (a chat id).", show_default=False),
]
LimitOption = Annotated[
    int,
    typer.Option("--limit", "-n", min=1, metavar="N", help="How many chats (pages as needed)."),
]
BeforeOption = Annotated[
    str | None,
    typer.Option(
        "--before", metavar="TIME", help="Only chats before this time: 10m, 2h, 1d, ISO 8601, ms."
    ),
]
AfterOption = Annotated[
    str | None,
    typer.Option(
        "--after", metavar="TIME", help="Only chats after this time: 10m, 2h, 1d, ISO 8601, ms."
    ),
]

# The most chats asked of the server in one request.
_ONE_PAGE = 100


@server_command(app, json=True)
def send(
    channel: ChannelArg,
    text: Annotated[
        str | None,
        typer.Argument(
            help="The message; missing or '-': read all of stdin (one chat).", metavar="TEXT"
        ),
    ] = None,
    thread: ThreadOption = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            metavar="KEY",
            help="Idempotency key: if you already sent a chat with this key in this channel, "
            "edit it instead of posting again. The chat ends with a visible line '🔑 KEY'.",
            show_default=False,
        ),
    ] = None,
    *,
    conn: Connection,
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

    async def body(c: Client) -> None:
        if key is None:
            from concordctl.cli.quick import send_plain

            chat = await send_plain(c, channel, content, thread)
        else:
            chat = await _send_keyed(c, channel, content, key, thread)
        conn.emit(chat, lambda: print(chat.id))

    conn.run(body)


async def _send_keyed(c: Client, channel: str, text: str, key: str, thread: int | None) -> Chat:
    from concordctl.cli.idempotency import find_keyed_chat, with_marker

    chan = await c.channel(channel)
    me = await c.me()
    content = with_marker(text, key)
    existing = await find_keyed_chat(c, chan.id, me.id, key)
    if existing is None:
        return await c.send_chat(chan.id, content, thread_id=thread)
    if existing.content == content:
        note(f"concordctl: chat {existing.id} with key {key!r} is already up to date")
        return existing
    note(f"concordctl: key {key!r} already sent as chat {existing.id}: edited it")
    return await c.edit_chat(existing.id, content)


@server_command(app, json=True)
def edit(
    chat_id: ChatIdArg,
    text: Annotated[
        str | None, typer.Argument(help="New content; missing or '-': stdin.", metavar="TEXT")
    ] = None,
    *,
    conn: Connection,
) -> None:
    """Replace the content of one of your chats.

    \b
    Example:
      concordctl edit 8501928463962112 "deploy of v1.2 done (rolled back)"
    """
    from concordctl.cli.args import read_text

    content = read_text(text)

    async def body(c: Client) -> None:
        chat = await c.edit_chat(chat_id, content)
        conn.emit(chat, lambda: note(f"edited chat {chat.id}"))

    conn.run(body)


@server_command(app)
def delete(chat_id: ChatIdArg, *, conn: Connection) -> None:
    """Delete one of your chats.

    \b
    Example:
      concordctl delete 8501928463962112
    """

    async def body(c: Client) -> None:
        await c.delete_chat(chat_id)

    conn.run(body)
    note(f"deleted chat {chat_id}")


def reaction_text(reaction: str) -> str:
    """``:+1:``-style shortcodes as their emoji; anything else unchanged."""
    if len(reaction) > 2 and reaction.startswith(":") and reaction.endswith(":"):
        from rich.emoji import Emoji, NoEmoji

        try:
            return str(Emoji(reaction[1:-1]))
        except NoEmoji:
            return reaction
    return reaction


@server_command(app, json=True)
def react(
    chat_id: ChatIdArg,
    reaction: Annotated[
        str,
        typer.Argument(
            help="Any text, usually an emoji; :shortcode: works (:+1:).", metavar="REACTION"
        ),
    ],
    remove: Annotated[bool, typer.Option("--remove", help="Take your reaction back.")] = False,
    *,
    conn: Connection,
) -> None:
    """React to a chat (or take the reaction back with --remove).

    With --json, prints the chat's reactions afterwards.

    \b
    Examples:
      concordctl react 8501928463962112 ✅
      concordctl react 8501928463962112 :+1: --remove
    """
    from concordctl.cli.sanitize import one_line

    emoji = reaction_text(reaction)

    async def body(c: Client) -> None:
        if remove:
            await c.unreact(chat_id, emoji)
        else:
            await c.react(chat_id, emoji)
        if conn.wants_json:
            conn.emit(await c.reactions(chat_id))
        else:
            note(f"{'removed' if remove else 'added'} {one_line(emoji)} on chat {chat_id}")

    conn.run(body)


@server_command(app)
def typing(channel: ChannelArg, thread: ThreadOption = None, *, conn: Connection) -> None:
    """Show others that you are typing in a channel (sent over the websocket).

    \b
    Example:
      concordctl typing general
    """

    async def body(c: Client) -> None:
        await c.typing(channel, thread_id=thread)

    conn.run(body)


@server_command(app, json=True)
def history(
    channel: ChannelArg,
    limit: LimitOption = 20,
    before: BeforeOption = None,
    after: AfterOption = None,
    thread: Annotated[
        int | None,
        typer.Option(
            "--thread", metavar="ID", help="Only chats in this thread.", show_default=False
        ),
    ] = None,
    *,
    conn: Connection,
) -> None:
    """Show the latest chats of a channel, oldest first.

    With --json: the server's array of chats, newest first, as the API sends it.
    When --limit cuts the result, stderr says so.

    \b
    Examples:
      concordctl history general --limit 50
      concordctl history general --after 1h --before 10m
      concordctl history '#ci' --json --jq '.[].content'
    """
    from concordctl.cli.args import parse_time

    before_ms = parse_time(before, option="--before") if before is not None else None
    after_ms = parse_time(after, option="--after") if after is not None else None

    async def body(c: Client) -> None:
        cid = await c.channel_id(channel)
        if limit < _ONE_PAGE and before_ms is None and after_ms is None and thread is None:
            chats = await c.latest_chats(cid, limit=limit + 1)
        else:  # filters, or more than one request: page through the search endpoint
            chats = await c.search_chats(
                channel=cid,
                thread_id=thread,
                before=before_ms,
                after=after_ms,
                limit=limit + 1,
                page_size=min(_ONE_PAGE, limit + 1),
            )
        await _print_chats(c, conn, chats, limit)

    conn.run(body)


@server_command(app, json=True)
def search(
    query: Annotated[
        str | None, typer.Argument(help="Words to find in the content.", metavar="QUERY")
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option(
            "--channel",
            "-c",
            metavar="CHANNEL",
            help="Only this channel (id or name).",
            autocompletion=complete_channel,
        ),
    ] = None,
    author: Annotated[
        str | None,
        typer.Option(
            "--author",
            "-a",
            metavar="USER",
            help="Only chats by this user (id or name).",
            autocompletion=complete_user,
        ),
    ] = None,
    before: BeforeOption = None,
    after: AfterOption = None,
    thread: Annotated[
        int | None,
        typer.Option(
            "--thread", metavar="ID", help="Only chats in this thread.", show_default=False
        ),
    ] = None,
    limit: LimitOption = 50,
    *,
    conn: Connection,
) -> None:
    """Search chats by words, channel, author and time, oldest first.

    With --json: the server's array of chats, newest first, as the API sends it.
    When --limit cuts the result, stderr says so.

    \b
    Examples:
      concordctl search deploy --channel releases --after 1d
      concordctl search --author alice --after 2026-11-25T09:00 --before 2h --json
    """
    from concordctl.cli.args import parse_time

    before_ms = parse_time(before, option="--before") if before is not None else None
    after_ms = parse_time(after, option="--after") if after is not None else None

    async def body(c: Client) -> None:
        chats = await c.search_chats(
            query,
            channel=channel,
            author=author,
            thread_id=thread,
            before=before_ms,
            after=after_ms,
            limit=limit + 1,
            page_size=min(_ONE_PAGE, limit + 1),
        )
        await _print_chats(c, conn, chats, limit)

    conn.run(body)


async def _print_chats(c: Client, conn: Connection, chats: list[Chat], limit: int) -> None:
    """``chats`` (newest first, one more than ``limit`` if there are more) in the chosen mode."""
    from concordctl.cli import output

    shown = chats[:limit]
    if len(chats) > limit:
        note(f"concordctl: showing the newest {limit} chats of more; raise it with --limit N")
    if conn.wants_json:
        conn.emit(shown)
        return
    from concordctl.cli.names import names_for_chats

    names = await names_for_chats(c, shown)
    if not shown:
        note("concordctl: no chats")
    output.print_chats(reversed(shown), names)
