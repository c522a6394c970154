"""``concordctl tail``: print live events, reconnecting and recovering missed chats."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from concordctl.cli.app import app
from concordctl.cli.complete import complete_channel, complete_user
from concordctl.cli.options import Connection, server_command
from concordctl.protocol import (
    EVENT_TYPES,
    THREAD_TYPES,
    event_channel_id,
    event_content,
    event_thread_id,
)

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.cli.checkpoint import Checkpoint
    from concordctl.client import Client
    from concordctl.protocol import Chat, Event

WaitTimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=0,
        metavar="SECONDS",
        help="Give up after this many seconds: exit 124.",
        show_default=False,
    ),
]


AuthorsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--author",
        "-a",
        metavar="USER",
        help="Only chats by this user (id or name; repeatable).",
        show_default=False,
        autocompletion=complete_user,
    ),
]


@dataclass(frozen=True)
class Filter:
    """Which events a tail prints: all of the given conditions hold."""

    types: frozenset[str] = frozenset()
    regex: re.Pattern[str] | None = None
    author_ids: frozenset[int] = frozenset()
    thread_id: int | None = None
    since_ms: int | None = None

    @property
    def everything(self) -> bool:
        return (
            not self.types
            and self.regex is None
            and not self.author_ids
            and self.thread_id is None
            and self.since_ms is None
        )

    def accepts(self, event: Event) -> bool:
        from concordctl.protocol import ChatSent

        if self.types and event.type not in self.types:
            return False
        if self.regex is not None:
            content = event_content(event)
            if content is None or self.regex.search(content) is None:
                return False
        chat = event.chat if isinstance(event, ChatSent) else None
        # --author means chats by that user (its help says so), not their typing.
        if self.author_ids and (chat is None or chat.author_id not in self.author_ids):
            return False
        if self.thread_id is not None and (
            event.type not in THREAD_TYPES or event_thread_id(event) != self.thread_id
        ):
            return False
        return not (
            self.since_ms is not None and chat is not None and chat.created_at < self.since_ms
        )


def check_types(types: list[str] | None) -> frozenset[str]:
    """The ``--type`` values; an unknown one is a usage error with the closest names."""
    import difflib

    from concordctl.errors import UsageError

    wanted = frozenset(types or ())
    known = sorted(EVENT_TYPES)
    for name in sorted(wanted - EVENT_TYPES):
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(close)}?" if close else "known: " + ", ".join(sorted(known))
        )
        raise UsageError(f"--type: {name!r} is not an event type", hint=hint)
    return wanted


@server_command(app, json=True, timeout=False)
def tail(
    channels: Annotated[
        list[str] | None,
        typer.Argument(
            help="Channels (ids or names) to follow; none: all.",
            metavar="[CHANNEL]...",
            show_default=False,
            autocompletion=complete_channel,
        ),
    ] = None,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            "-t",
            metavar="TYPE",
            help="Only events of this type (repeatable): chat_sent, chat_edited, chat_deleted, "
            "chat_reactions_updated, chat_typing, user_status_updated, ...",
            show_default=False,
        ),
    ] = None,
    match: Annotated[
        str | None,
        typer.Option(
            "--match",
            "-m",
            metavar="REGEX",
            help="Only chats whose content matches this regular expression.",
        ),
    ] = None,
    authors: AuthorsOption = None,
    thread: Annotated[
        int | None,
        typer.Option(
            "--thread", metavar="ID", help="Only events in this thread.", show_default=False
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="TIME",
            help="First print the chats sent since this time (10m, 1h, ISO 8601, ms).",
            show_default=False,
        ),
    ] = None,
    backfill: Annotated[
        int,
        typer.Option(
            "--backfill", "-b", min=0, metavar="N", help="First print the last N matching chats."
        ),
    ] = 0,
    count: Annotated[
        int | None,
        typer.Option(
            "--count",
            min=1,
            metavar="N",
            help="Exit 0 after N matching events (backfilled ones count).",
            show_default=False,
        ),
    ] = None,
    timeout: WaitTimeoutOption = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            metavar="FILE",
            help="Remember the last chat seen in FILE; a restarted tail first prints what it "
            "missed. Exactly once when stdout is a regular file (>> log), else at least once.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    keepalive: Annotated[
        float,
        typer.Option(
            "--keepalive",
            min=0.1,
            metavar="SECONDS",
            help="Ping a server that has been silent for SECONDS; no pong within half as long "
            "and tail reconnects. A dead connection is noticed within 1.5x SECONDS.",
        ),
    ] = 20.0,
    *,
    conn: Connection,
) -> None:
    """Print live events, one per line, reconnecting and recovering missed chats.

    After a reconnect a gap line says from when to when edits, deletions,
    reactions and typing may have been missed (in --json:
    {"type": "concordctl.gap", "since": MS, "until": MS}); chats sent meanwhile
    are recovered and printed ("recovered": true in --json). Gap lines are
    always printed and never counted. A first connection that fails is an
    error (exit 6 unreachable, 3 refused credentials); once connected, tail
    reconnects for ever.

    \b
    Examples:
      concordctl tail general releases
      concordctl tail --json --type chat_sent --jq .chat.content
      concordctl tail ci --match 'FAILED' --count 1 --timeout 600
      concordctl tail general --author alice --since 1h
      concordctl tail --checkpoint ~/.tail.ckpt --json >> log.ndjson
    """
    from concordctl.cli.args import compile_regex, parse_time

    wanted = check_types(types)
    regex = compile_regex(match) if match is not None else None
    since_ms = parse_time(since, option="--since") if since is not None else None
    ckpt: Checkpoint | None = None
    if checkpoint is not None:
        from concordctl.cli.checkpoint import Checkpoint

        ckpt = Checkpoint.load(checkpoint)
        ckpt.check_writable()

    async def main(c: Client) -> None:
        c.stream_options.update(ping_interval=keepalive, ping_timeout=keepalive / 2)
        author_ids = frozenset([await c.user_id(a) for a in authors or ()])
        flt = Filter(wanted, regex, author_ids, thread, since_ms)
        await _tail(c, conn, channels or [], flt, backfill, count, timeout, ckpt)

    conn.run(main, deadline=False)


async def _tail(
    c: Client,
    conn: Connection,
    channels: list[str],
    flt: Filter,
    backfill: int,
    count: int | None,
    timeout: float | None,  # noqa: ASYNC109 (the command's --timeout, applied inside)
    ckpt: Checkpoint | None,
) -> None:
    from concordctl.cli.printer import Printer, follow
    from concordctl.errors import TimedOut
    from concordctl.protocol import ChatSent, Gap

    seen = 0
    channel_ids = [await c.channel_id(ch) for ch in channels]
    in_scope = frozenset(channel_ids)
    # The checkpoint is written only once the lines of its chats are out of
    # the process: after each flush of the NDJSON writer, or at once in
    # human mode, where every line is flushed as it is printed.
    printer = Printer(c, conn.json, after_flush=ckpt.commit if ckpt else None, jq=conn.jq)
    if ckpt is not None and printer.json and conn.jq is None:
        ckpt.attach_output()  # exactly once for NDJSON appended to a file
    cursor = ckpt.chat_id if ckpt is not None else None
    # A cursor taken from the backfill only bridges the moment between
    # the backfill and the connection: its gap marker says nothing.
    quiet_first_gap = False

    def done() -> bool:
        return count is not None and seen >= count

    async def run() -> None:
        nonlocal seen, cursor, quiet_first_gap
        if backfill:
            for chat in await _latest(c, channel_ids, backfill, flt, cursor):
                await printer.print(ChatSent(chat=chat))
                seen += 1
                if ckpt is None:
                    cursor = max(cursor or 0, chat.id)
                    quiet_first_gap = True
                if done():
                    return
        write = printer.writer.write if printer.json else None
        commit: Callable[[], None] | None = None
        if ckpt is not None:
            # A flush even when the chat printed nothing (filtered out),
            # so that the checkpoint still moves past it.
            commit = printer.writer.request_flush if printer.json else printer.flushed

        async def handle(event: Event) -> bool:
            nonlocal seen, quiet_first_gap
            if type(event) is Gap:
                if not quiet_first_gap:
                    await printer.print(event)
                quiet_first_gap = False
                return False
            quiet_first_gap = False
            if in_scope and event_channel_id(event) not in in_scope:
                return False
            if flt.everything or flt.accepts(event):
                if write is not None:
                    write(event)
                else:
                    await printer.print(event)
                seen += 1
            if commit is not None and type(event) is ChatSent:
                assert ckpt is not None
                if ckpt.note(event.chat.id, event.chat.created_at):
                    commit()
            return done()

        await follow(
            lambda on_state: c.events(
                since=cursor,
                since_time=flt.since_ms if cursor is None else None,
                channels=channel_ids or None,
                on_state=on_state,
            ),
            handle,
            where=c.settings.base_url,
        )

    try:
        async with asyncio.timeout(timeout):
            await run()
    except TimeoutError:
        from concordctl.cli.render import plural

        got = f"{seen} of {plural(count, 'event')}" if count is not None else plural(seen, "event")
        raise TimedOut(f"tail: {got} in {timeout:g}s") from None
    finally:
        printer.close()


async def _latest(
    c: Client, channel_ids: list[int], n: int, flt: Filter, before_checkpoint: int | None
) -> list[Chat]:
    """The last ``n`` chats that pass ``flt`` (filter first, then take n), oldest first.

    Chats newer than a checkpoint are left to the stream's recovery.
    """
    from concordctl.protocol import ChatSent

    pages = 3 if flt.everything else 10  # how far back to look for n matching chats
    want = n * pages if not flt.everything else n
    if channel_ids:
        chats: list[Chat] = []
        for cid in channel_ids:
            chats.extend(await c.search_chats(channel=cid, limit=want, page_size=100))
    else:
        chats = await c.search_chats(limit=want, page_size=100)
    chats = [
        chat
        for chat in chats
        if (before_checkpoint is None or chat.id <= before_checkpoint)
        and flt.accepts(ChatSent(chat=chat))
    ]
    chats.sort(key=lambda chat: chat.id)
    return chats[-n:]
