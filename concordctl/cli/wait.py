"""``concordctl wait``: the CI gate, until N matching chats or N users' reactions arrive."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Annotated

import typer

from concordctl.cli.app import app
from concordctl.cli.complete import complete_channel, complete_user
from concordctl.cli.options import Connection, server_command
from concordctl.cli.tail import WaitTimeoutOption

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.client import Client
    from concordctl.protocol import Channel, Event


@server_command(app, json=True, timeout=False)
def wait(
    channel: Annotated[
        str,
        typer.Argument(
            help="Channel id or name to watch.", metavar="CHANNEL", autocompletion=complete_channel
        ),
    ],
    match: Annotated[
        str | None,
        typer.Option(
            "--match", "-m", metavar="REGEX", help="Wait for a chat whose content matches this."
        ),
    ] = None,
    reaction: Annotated[
        str | None,
        typer.Option(
            "--reaction", "-r", metavar="R", help="Wait for this reaction (needs --on CHAT_ID)."
        ),
    ] = None,
    on: Annotated[
        int | None,
        typer.Option(
            "--on",
            metavar="CHAT_ID",
            help="The chat the --reaction must be on.",
            show_default=False,
        ),
    ] = None,
    authors: Annotated[
        list[str] | None,
        typer.Option(
            "--author",
            "-a",
            metavar="USER",
            help="Only from this user (id or name; repeatable).",
            show_default=False,
            autocompletion=complete_user,
        ),
    ] = None,
    count: Annotated[
        int,
        typer.Option(
            "--count",
            min=1,
            metavar="N",
            help="Wait for N matching chats, or N distinct users' reactions (e.g. two approvals).",
        ),
    ] = 1,
    timeout: WaitTimeoutOption = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="TIME",
            help="Also accept what was sent after this time (10m, 1h, ISO 8601) before the "
            "wait started.",
            show_default=False,
        ),
    ] = None,
    *,
    conn: Connection,
) -> None:
    """Wait for matching chats or reactions: the CI gate.

    Exits 0 and prints each match (with --json, the chat_sent or
    chat_reactions_updated event) as soon as --count of them arrived, 124 at
    the timeout. Chats and reactions from before the wait started do not
    count unless --since says from when they do.

    \b
    Examples:
      concordctl wait releases --match '^approve' --author alice --timeout 600
      ID=$(concordctl send releases "deploy v1.2? react ✅")
      concordctl wait releases --reaction ✅ --on "$ID" --count 2 --timeout 600
    """
    from concordctl.cli.args import compile_regex, parse_time
    from concordctl.cli.chats import reaction_text
    from concordctl.errors import TimedOut, UsageError

    if (match is None) == (reaction is None):
        raise UsageError("wait: give either --match REGEX or --reaction R --on CHAT_ID")
    if reaction is not None and on is None:
        raise UsageError("wait: --reaction needs --on CHAT_ID")
    if match is None and on is not None and reaction is None:
        raise UsageError("wait: --on goes with --reaction")
    regex = compile_regex(match) if match is not None else None
    emoji = reaction_text(reaction) if reaction is not None else None
    since_ms = parse_time(since, option="--since") if since is not None else None

    async def body(c: Client) -> None:
        try:
            async with asyncio.timeout(timeout):
                chan = await c.channel(channel)
                author_ids = {await c.user_id(a) for a in authors or ()}
                if regex is not None:
                    await _wait_chats(c, conn, chan, regex, author_ids, since_ms, count)
                else:
                    assert emoji is not None and on is not None
                    await _wait_reactions(c, conn, chan, emoji, on, author_ids, since_ms, count)
        except TimeoutError:
            from concordctl.cli.sanitize import one_line

            what = (
                f"chat matching {match!r}"
                if match is not None
                else f"{emoji} reaction on chat {on}"
            )
            many = f"{count} of " if count > 1 else ""
            raise TimedOut(
                one_line(f"wait: no {many}{what} in #{channel} within {timeout:g}s")
            ) from None

    conn.run(body, deadline=False)


async def _wait_chats(
    c: Client,
    conn: Connection,
    chan: Channel,
    regex: re.Pattern[str],
    author_ids: set[int],
    since_ms: int | None,
    count: int,
) -> None:
    from concordctl.cli.printer import Printer, follow
    from concordctl.protocol import ChatSent

    # Without --since, "before the wait started" is everything up to the
    # newest chat now: passing it as the cursor also recovers a chat sent
    # while the websocket was still connecting.
    baseline: int | None = None
    if since_ms is None:
        latest = await c.latest_chats(chan.id, limit=1)
        baseline = latest[0].id if latest else 0
    printer = Printer(c, conn.json, jq=conn.jq)
    found: set[int] = set()

    async def handle(event: Event) -> bool:
        if not isinstance(event, ChatSent) or event.chat.channel_id != chan.id:
            return False
        chat = event.chat
        if chat.id in found or (baseline is not None and chat.id <= baseline):
            return False
        if since_ms is not None and chat.created_at < since_ms:
            return False
        if author_ids and chat.author_id not in author_ids:
            return False
        if regex.search(chat.content) is None:
            return False
        found.add(chat.id)
        await printer.print(event)
        return len(found) >= count

    try:
        await follow(
            lambda on_state: c.events(
                since=baseline or None, since_time=since_ms, channels=[chan.id], on_state=on_state
            ),
            handle,
            where=c.settings.base_url,
        )
    finally:
        printer.close()


async def _wait_reactions(
    c: Client,
    conn: Connection,
    chan: Channel,
    reaction: str,
    chat_id: int,
    author_ids: set[int],
    since_ms: int | None,
    count: int,
) -> None:
    """Wait until ``count`` users (of ``author_ids``, if given) add ``reaction`` to the chat.

    The stream's reaction events carry counts, not users, so on each event
    (and after each (re)connect, which may have missed one) the chat's
    reacting users are fetched and compared with those present when the wait
    started (none with --since).
    """
    from concordctl.cli.printer import follow
    from concordctl.errors import UsageError
    from concordctl.protocol import ChatReactionsUpdated

    chat = await c.get_chat(chat_id)
    if chat.channel_id != chan.id:
        raise UsageError(f"wait: chat {chat_id} is not in #{chan.name}")
    before: set[int] = set()
    if since_ms is None:
        before = set((await c.reactions(chat_id)).reacting_users.get(reaction, []))
    reactors: list[int] = []

    async def check() -> bool:
        users = (await c.reactions(chat_id)).reacting_users.get(reaction, [])
        for user in users:
            new = user not in before and user not in reactors
            if new and (not author_ids or user in author_ids):
                reactors.append(user)
        return len(reactors) >= count

    if await check():  # with --since an earlier reaction counts
        return await _report(c, conn, chat_id, chat.channel_id, chat.thread_id, reaction, reactors)

    async def handle(event: Event) -> bool:
        if getattr(event, "type", "") == "concordctl.gap":
            return await check()  # a reconnect may have missed the reaction
        if (
            isinstance(event, ChatReactionsUpdated)
            and event.chat_id == chat_id
            and event.reactions.get(reaction, 0) > 0
        ):
            return await check()
        return False

    await follow(
        lambda on_state: c.events(since=chat_id, channels=[chan.id], on_state=on_state),
        handle,
        where=c.settings.base_url,
    )
    await _report(c, conn, chat_id, chat.channel_id, chat.thread_id, reaction, reactors)


async def _report(
    c: Client,
    conn: Connection,
    chat_id: int,
    channel_id: int,
    thread_id: int | None,
    reaction: str,
    reactors: list[int],
) -> None:
    current = await c.reactions(chat_id)
    if conn.wants_json:
        from concordctl.cli.output import EventWriter
        from concordctl.protocol import ChatReactionsUpdated

        writer = EventWriter(jq=conn.jq)
        writer.write(
            ChatReactionsUpdated(
                chat_id=chat_id,
                channel_id=channel_id,
                thread_id=thread_id,
                reactions=current.reactions,
            )
        )
        writer.close()
        return
    from concordctl.cli.names import add_names
    from concordctl.cli.render import Names
    from concordctl.cli.sanitize import one_line

    names = await add_names(c, Names(), [], reactors)
    for user in reactors:
        print(f"{one_line(names.user(user))} reacted {one_line(reaction)} on chat {chat_id}")
