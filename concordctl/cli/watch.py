"""Commands on the live stream: tail (print events) and wait (the CI gate)."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable
from pathlib import Path
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
    run_async,
)

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.cli.checkpoint import Checkpoint
    from concordctl.cli.render import Names
    from concordctl.client import Client
    from concordctl.protocol import Chat, Event

TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout", min=0, help="Give up after this many seconds: exit 124.", show_default=False
    ),
]


class _Printer:
    """Prints events in the chosen mode: NDJSON, or rich lines with names."""

    def __init__(
        self, client: Client, json: bool, after_flush: Callable[[], object] | None = None
    ) -> None:
        self._client = client
        self.json = json
        if json:
            from concordctl.cli.render import EventWriter

            self.writer = EventWriter(after_flush=after_flush)
        else:
            from concordctl.cli.render import Names, stdout_console

            self._console = stdout_console()
            self._names = Names()

    @property
    def names(self) -> Names:
        return self._names

    async def print(self, event: Event) -> None:
        if self.json:
            self.writer.write(event)
            return
        from concordctl.cli.names import add_names, ids_of_event
        from concordctl.cli.render import event_line

        channels, users = ids_of_event(event)
        await add_names(self._client, self._names, channels, users)
        self._console.print(event_line(event, self._names))

    def close(self) -> None:
        if self.json:
            self.writer.close()


def _content(event: Event) -> str | None:
    from concordctl.protocol import ChatEdited, ChatSent

    if isinstance(event, ChatSent):
        return event.chat.content
    if isinstance(event, ChatEdited):
        return event.content
    return None


def _channel_of(event: Event) -> int | None:
    from concordctl.protocol import ChatSent

    if isinstance(event, ChatSent):
        return event.chat.channel_id
    channel = getattr(event, "channel_id", None)
    return channel if isinstance(channel, int) else None


@app.command()
def tail(
    channels: Annotated[
        list[str] | None,
        typer.Argument(help="Channels (ids or names) to follow; none: all.", show_default=False),
    ] = None,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            "-t",
            help="Only events of this type (repeatable): chat_sent, chat_edited, chat_deleted, "
            "chat_reactions_updated, chat_typing, user_status_updated, ...",
            show_default=False,
        ),
    ] = None,
    match: Annotated[
        str | None,
        typer.Option(
            "--match", "-m", help="Only chats whose content matches this regular expression."
        ),
    ] = None,
    backfill: Annotated[
        int, typer.Option("--backfill", "-b", min=0, help="First print the last N chats.")
    ] = 0,
    count: Annotated[
        int | None,
        typer.Option("--count", min=1, help="Exit 0 after N matching events.", show_default=False),
    ] = None,
    timeout: TimeoutOption = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Remember the last chat seen in FILE; a restarted tail first prints what it "
            "missed.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    server: ServerOption = None,
    profile: ProfileOption = None,
    ca_cert: CaCertOption = None,
    insecure: InsecureOption = False,
    json: JsonOption = False,
) -> None:
    """Print live events, one per line, reconnecting and recovering missed chats.

    After a reconnect a gap line says from when to when edits, deletions,
    reactions and typing may have been missed (in --json:
    {"type": "concordctl.gap", "since": MS, "until": MS}); chats sent meanwhile
    are recovered and printed ("recovered": true in --json). Gap lines are
    always printed and never counted.

    \b
    Examples:
      concordctl tail general releases
      concordctl tail --json --type chat_sent | jq -r .chat.content
      concordctl tail ci --match 'FAILED' --count 1 --timeout 600
      concordctl tail --checkpoint ~/.tail.ckpt --json >> log.ndjson
    """
    from concordctl.cli.args import compile_regex
    from concordctl.protocol import EVENT_TYPES

    regex = compile_regex(match) if match is not None else None
    wanted = frozenset(types or ())
    for t in sorted(wanted - EVENT_TYPES):
        print(
            f"concordctl: warning: {t!r} is not an event type this version knows", file=sys.stderr
        )

    run_async(
        _tail(
            channels or [],
            wanted,
            regex,
            backfill,
            count,
            timeout,
            checkpoint,
            json,
            client_from_options(server, profile, ca_cert, insecure),
        )
    )


async def _tail(
    channels: list[str],
    wanted: frozenset[str],
    regex: re.Pattern[str] | None,
    backfill: int,
    count: int | None,
    timeout: float | None,  # noqa: ASYNC109 (the command's --timeout, applied inside)
    checkpoint_path: Path | None,
    json: bool,
    client: Client,
) -> None:
    from contextlib import aclosing

    from concordctl.cli.render import StatusReporter
    from concordctl.errors import TimedOut
    from concordctl.protocol import ChatSent, Gap

    seen = 0
    reporter = StatusReporter()

    async def run() -> None:
        nonlocal seen
        async with client as c:
            channel_ids = [(await c.channel(channel_ref(ch))).id for ch in channels]
            in_scope = frozenset(channel_ids)
            ckpt: Checkpoint | None = None
            if checkpoint_path is not None:
                from concordctl.cli.checkpoint import Checkpoint

                ckpt = Checkpoint.load(checkpoint_path)
            # The checkpoint is written only once the lines of its chats are
            # out of the process: after each flush of the NDJSON writer, or
            # at once in human mode, where rich flushes every line it prints.
            printer = _Printer(c, json, after_flush=ckpt.commit if ckpt is not None else None)
            since = ckpt.chat_id if ckpt is not None else None
            # A cursor taken from the backfill only bridges the moment between
            # the backfill and the connection: its gap marker says nothing.
            quiet_first_gap = False

            def accepts(event: Event) -> bool:
                if wanted and event.type not in wanted:
                    return False
                if regex is not None:
                    content = _content(event)
                    if content is None or regex.search(content) is None:
                        return False
                return True

            if backfill:
                resume_from = since
                for chat in await _latest(c, channel_ids, backfill):
                    if resume_from is not None and chat.id > resume_from:
                        continue  # newer than the checkpoint: recovered below
                    backfilled = ChatSent(chat=chat)
                    if accepts(backfilled):
                        await printer.print(backfilled)
                    if ckpt is None:
                        since = max(since or 0, chat.id)
                        quiet_first_gap = True
            # The hot loop of `tail --json`: no coroutine per event, no filter
            # calls when there are no filters.
            write = printer.writer.write if printer.json else None
            unfiltered = not wanted and regex is None
            commit: Callable[[], None] | None = None
            if ckpt is not None:
                # A flush even when the chat printed nothing (filtered out),
                # so that the checkpoint still moves past it.
                commit = printer.writer.request_flush if printer.json else ckpt.commit
            stream = c.events(since=since, channels=channel_ids or None, on_state=reporter)
            try:
                async with aclosing(stream) as events:
                    async for event in events:
                        if type(event) is Gap:
                            if not quiet_first_gap:
                                await printer.print(event)
                            quiet_first_gap = False
                            continue
                        quiet_first_gap = False
                        if in_scope and _channel_of(event) not in in_scope:
                            continue
                        if unfiltered or accepts(event):
                            if write is not None:
                                write(event)
                            else:
                                await printer.print(event)
                            seen += 1
                        if commit is not None and type(event) is ChatSent:
                            assert ckpt is not None
                            if ckpt.note(event.chat.id, event.chat.created_at):
                                commit()
                        if count is not None and seen >= count:
                            return
            finally:
                printer.close()

    try:
        if timeout is None:
            await run()
        else:
            async with asyncio.timeout(timeout):
                await run()
    except TimeoutError:
        wanted_n = f" of {count}" if count is not None else ""
        raise TimedOut(f"tail: {seen}{wanted_n} events in {timeout:g}s") from None
    finally:
        reporter.close()


async def _latest(c: Client, channel_ids: list[int], n: int) -> list[Chat]:
    """The last ``n`` chats of the channels (all channels if none), oldest first."""
    if channel_ids:
        chats: list[Chat] = []
        for cid in channel_ids:
            chats.extend(await c.latest_chats(cid, limit=n))
    else:
        chats = await c.search_chats(limit=n)
    chats.sort(key=lambda chat: chat.id)
    return chats[-n:]


@app.command()
def wait(
    channel: Annotated[str, typer.Argument(help="Channel id or name to watch.")],
    match: Annotated[
        str | None,
        typer.Option("--match", "-m", help="Wait for a chat whose content matches this regex."),
    ] = None,
    reaction: Annotated[
        str | None,
        typer.Option("--reaction", "-r", help="Wait for this reaction (needs --on CHAT_ID)."),
    ] = None,
    on: Annotated[
        int | None,
        typer.Option("--on", help="The chat the --reaction must be on.", show_default=False),
    ] = None,
    authors: Annotated[
        list[str] | None,
        typer.Option(
            "--author",
            "-a",
            help="Only from this user (id or name; repeatable).",
            show_default=False,
        ),
    ] = None,
    timeout: TimeoutOption = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Also accept what was sent after this time (10m, 1h, ISO 8601) before the "
            "wait started.",
            show_default=False,
        ),
    ] = None,
    server: ServerOption = None,
    profile: ProfileOption = None,
    ca_cert: CaCertOption = None,
    insecure: InsecureOption = False,
    json: JsonOption = False,
) -> None:
    """Wait for a matching chat or a reaction: the CI gate.

    Exits 0 and prints the match (with --json, the chat_sent or
    chat_reactions_updated event) as soon as it arrives, 124 at the timeout.
    Chats and reactions from before the wait started do not count unless
    --since says from when they do.

    \b
    Examples:
      concordctl wait releases --match '^approve' --author alice --timeout 600
      ID=$(concordctl send releases "deploy v1.2? react ✅")
      concordctl wait releases --reaction ✅ --on "$ID" --timeout 600
    """
    from concordctl.cli.args import compile_regex, parse_time
    from concordctl.errors import UsageError

    if (match is None) == (reaction is None):
        raise UsageError("wait: give either --match REGEX or --reaction R --on CHAT_ID")
    if reaction is not None and on is None:
        raise UsageError("wait: --reaction needs --on CHAT_ID")
    if match is None and on is not None and reaction is None:
        raise UsageError("wait: --on goes with --reaction")
    regex = compile_regex(match) if match is not None else None
    since_ms = parse_time(since, option="--since") if since is not None else None
    client = client_from_options(server, profile, ca_cert, insecure)

    async def body() -> None:
        from concordctl.errors import TimedOut

        try:
            async with asyncio.timeout(timeout):
                async with client as c:
                    author_ids = {await _user_id(c, a) for a in authors or ()}
                    if regex is not None:
                        await _wait_chat(c, channel, regex, author_ids, since_ms, json)
                    else:
                        assert reaction is not None and on is not None
                        await _wait_reaction(c, channel, reaction, on, author_ids, since_ms, json)
        except TimeoutError:
            what = (
                f"chat matching {match!r}"
                if match is not None
                else f"{reaction} reaction on chat {on}"
            )
            raise TimedOut(f"wait: no {what} in #{channel} within {timeout:g}s") from None

    run_async(body())


async def _user_id(c: Client, ref: str) -> int:
    return int(ref) if ref.isdigit() else (await c.user(ref)).id


async def _wait_chat(
    c: Client,
    channel: str,
    regex: re.Pattern[str],
    author_ids: set[int],
    since_ms: int | None,
    json: bool,
) -> None:
    from contextlib import aclosing

    from concordctl.cli.render import StatusReporter
    from concordctl.protocol import ChatSent

    chan = await c.channel(channel_ref(channel))
    # Without --since, "before the wait started" is everything up to the
    # newest chat now: passing it as the cursor also recovers a chat sent
    # while the websocket was still connecting.
    baseline: int | None = None
    if since_ms is None:
        latest = await c.latest_chats(chan.id, limit=1)
        baseline = latest[0].id if latest else 0
    reporter = StatusReporter()
    stream = c.events(
        since=baseline or None, since_time=since_ms, channels=[chan.id], on_state=reporter
    )
    try:
        async with aclosing(stream) as events:
            async for event in events:
                if not isinstance(event, ChatSent) or event.chat.channel_id != chan.id:
                    continue
                chat = event.chat
                if baseline is not None and chat.id <= baseline:
                    continue
                if since_ms is not None and chat.created_at < since_ms:
                    continue
                if author_ids and chat.author_id not in author_ids:
                    continue
                if regex.search(chat.content) is None:
                    continue
                printer = _Printer(c, json)
                await printer.print(event)
                printer.close()
                return
    finally:
        reporter.close()


async def _wait_reaction(
    c: Client,
    channel: str,
    reaction: str,
    chat_id: int,
    author_ids: set[int],
    since_ms: int | None,
    json: bool,
) -> None:
    """Wait until a user (of ``author_ids``, if given) adds ``reaction`` to the chat.

    The stream's reaction events carry counts, not users, so on each event
    (and after each (re)connect, which may have missed one) the chat's
    reacting users are fetched and compared with those present when the wait
    started (none with --since).
    """
    from concordctl.cli.render import StatusReporter
    from concordctl.errors import UsageError
    from concordctl.protocol import ChatReactionsUpdated

    chan = await c.channel(channel_ref(channel))
    chat = await c.get_chat(chat_id)
    if chat.channel_id != chan.id:
        raise UsageError(f"wait: chat {chat_id} is not in #{chan.name}")
    before: set[int] = set()
    if since_ms is None:
        before = set((await c.reactions(chat_id)).reacting_users.get(reaction, []))

    async def new_reactor() -> int | None:
        users = (await c.reactions(chat_id)).reacting_users.get(reaction, [])
        for user in users:
            if user not in before and (not author_ids or user in author_ids):
                return user
        return None

    check = asyncio.Event()
    check.set()  # once at the start: with --since an earlier reaction counts
    found: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    reporter = StatusReporter()

    def on_state(state: object) -> None:
        reporter(state)
        if getattr(state, "state", "") == "connected":
            check.set()

    async def checker() -> None:
        while True:
            await check.wait()
            check.clear()
            user = await new_reactor()
            if user is not None and not found.done():
                found.set_result(user)

    async def watcher() -> None:
        from contextlib import aclosing

        stream = c.events(channels=[chan.id], on_state=on_state)
        async with aclosing(stream) as events:
            async for event in events:
                if (
                    isinstance(event, ChatReactionsUpdated)
                    and event.chat_id == chat_id
                    and event.reactions.get(reaction, 0) > 0
                ):
                    check.set()

    tasks = [asyncio.create_task(checker()), asyncio.create_task(watcher())]
    try:
        waiters: list[asyncio.Future[object]] = [found, *tasks]  # type: ignore[list-item]
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task in done:
                task.result()  # a failed task: raise its error
        user = found.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        reporter.close()

    current = await c.reactions(chat_id)
    if json:
        from concordctl.cli.render import EventWriter

        writer = EventWriter()
        writer.write(
            ChatReactionsUpdated(
                chat_id=chat.id,
                channel_id=chat.channel_id,
                thread_id=chat.thread_id,
                reactions=current.reactions,
            )
        )
        writer.close()
    else:
        from concordctl.cli.names import add_names
        from concordctl.cli.render import Names, one_line

        names = await add_names(c, Names(), [], [user])
        print(f"{one_line(names.user(user))} reacted {one_line(reaction)} on chat {chat_id}")
