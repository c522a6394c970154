"""Everything the command line prints, and nothing else.

Two modes:

* ``--json``: exactly the server's JSON, camelCase, through
  :mod:`concordctl.protocol` (one document per command, or one event per
  line for ``tail``, flushed at once so ``concordctl tail --json | jq`` is
  live). rich is never imported in this mode.
* human: rich, imported on first use. Channels as a tree, users as a table,
  chats and events one line each: time, channel, author, content, and a mark
  for edits (✎), deletions (✗), reactions (☺), typing (…), recovered chats
  (↺) and the gap marker. Colours only on a terminal and never with
  ``NO_COLOR`` (rich honours both).

Data goes to stdout; status, warnings and errors to stderr. Chat content is
shown as plain text: newlines become ``⏎`` (one line per event) and control
characters are replaced, so a chat cannot move the cursor or recolour the
terminal.

Rendering needs names (channel and author), which take I/O to look up; the
command resolves them and passes a :class:`Names` here.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from concordctl.protocol import (
    ChannelCreated,
    ChannelDeleted,
    ChannelsUpdated,
    Chat,
    ChatDeleted,
    ChatEdited,
    ChatReactionsUpdated,
    ChatSent,
    ChatTyping,
    Event,
    FullChannel,
    FullUser,
    Gap,
    UnknownEvent,
    UserJoined,
    UserLeft,
    UserStatusUpdated,
    encode,
    encode_event,
)

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console
    from rich.status import Status
    from rich.text import Text

__all__ = [
    "EventWriter",
    "Names",
    "StatusReporter",
    "chat_line",
    "color_enabled",
    "event_line",
    "format_time",
    "one_line",
    "print_channels",
    "print_chats",
    "print_json",
    "print_users",
    "stderr_console",
    "stdout_console",
]

# C0 and C1 control characters other than newline and tab, which one_line
# handles: shown as U+FFFD so content cannot drive the terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def one_line(content: str) -> str:
    """Chat content as one printable line."""
    text = content.replace("\r\n", "\n").replace("\n", " ⏎ ").replace("\t", " ")
    return _CONTROL.sub("\ufffd", text)


def color_enabled(stream: IO[str] | None = None) -> bool:
    """Whether colours go to ``stream``: a terminal, and no ``NO_COLOR``."""
    s = stream if stream is not None else sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return s.isatty()
    except (AttributeError, ValueError):
        return False


def _console(stream: IO[str]) -> Console:
    from rich.console import Console

    color = color_enabled(stream)
    return Console(
        file=stream,
        # NO_COLOR: no escape codes at all (rich alone would keep bold and dim).
        color_system="auto" if color else None,
        no_color=not color or None,
        highlight=False,
        emoji=False,
        markup=False,
        soft_wrap=True,
    )


def stdout_console() -> Console:
    return _console(sys.stdout)


def stderr_console() -> Console:
    return _console(sys.stderr)


# --------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------


def print_json(value: Any) -> None:
    """One JSON document (a model, or a list of models) on stdout."""
    sys.stdout.write(encode(value).decode("utf-8") + "\n")
    sys.stdout.flush()


class EventWriter:
    """Writes events as NDJSON to stdout; every line is out before we wait.

    Outside an event loop each line is flushed at once. Inside one, lines
    are collected while events keep arriving without a pause and flushed as
    soon as the loop gets control back, that is before the tail waits for
    the next event: a reader (``| jq``) sees each event as soon as it would
    with a flush per line, but a burst of 100,000 events costs a few dozen
    ``write`` calls instead of 100,000. :meth:`close` flushes what is left.

    ``after_flush`` runs after every flush, once what was written is out of
    the process: ``tail --checkpoint`` writes its checkpoint there, so the
    file never names a chat whose line could still be lost with the process.
    """

    #: Flush early when this many bytes are pending, to bound memory.
    MAX_PENDING = 1 << 16

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        after_flush: Callable[[], object] | None = None,
    ) -> None:
        text = stream if stream is not None else sys.stdout
        text.flush()
        self._buffer: IO[bytes] = getattr(text, "buffer")  # noqa: B009 (IO[str] hides it)
        self._pending: list[bytes] = []
        self._size = 0
        self._scheduled = False
        self._after_flush = after_flush
        # A failure in a scheduled flush (the reader went away, the checkpoint
        # cannot be written) is kept and raised by the next write, in the
        # tail's own task.
        self._error: Exception | None = None

    def write(self, event: Event) -> None:
        # write_raw inlined: this runs once per event of `tail --json`.
        if self._error is not None:
            raise self._error
        line = encode_event(event)
        self._pending.append(line)
        self._size += len(line) + 1
        if self._size >= self.MAX_PENDING:
            self.flush()
        elif not self._scheduled:
            self._schedule()

    def write_raw(self, line: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._pending.append(line)
        self._size += len(line) + 1
        if self._size >= self.MAX_PENDING:
            self.flush()
        elif not self._scheduled:
            self._schedule()

    def request_flush(self) -> None:
        """Flush (and run ``after_flush``) when the loop next gets control."""
        if self._error is not None:
            raise self._error
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        loop.call_soon(self._scheduled_flush)
        self._scheduled = True

    def _scheduled_flush(self) -> None:
        try:
            self.flush()
        except Exception as exc:
            self._error = exc

    def flush(self) -> None:
        self._scheduled = False
        if self._error is not None:
            raise self._error
        if self._pending:
            self._pending.append(b"")
            data = b"\n".join(self._pending)
            self._pending.clear()
            self._size = 0
            self._buffer.write(data)
            self._buffer.flush()
        if self._after_flush is not None:
            self._after_flush()

    close = flush


# --------------------------------------------------------------------------
# Human: names and times
# --------------------------------------------------------------------------


@dataclass
class Names:
    """Channel and user names by id, as far as the command looked them up."""

    channels: dict[int, str] = field(default_factory=dict)
    users: dict[int, str] = field(default_factory=dict)

    def channel(self, channel_id: int) -> str:
        return self.channels.get(channel_id, str(channel_id))

    def user(self, user_id: int) -> str:
        return self.users.get(user_id, str(user_id))


def format_time(ms: int, *, now: float | None = None) -> str:
    """Local ``HH:MM:SS``, with the date in front when it is not today."""
    if ms <= 0:  # upstream stores chats written without sentAt at 0
        return "--:--:--"
    moment = datetime.fromtimestamp(ms / 1000)
    today = datetime.fromtimestamp(now if now is not None else time.time()).date()
    if moment.date() == today:
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _reactions(reactions: Mapping[str, int]) -> str:
    return "  ".join(f"{one_line(r)} {n}" for r, n in reactions.items())


# --------------------------------------------------------------------------
# Human: lines
# --------------------------------------------------------------------------


def _where(text: Text, names: Names, channel_id: int, thread_id: int | None) -> None:
    text.append(" #" + one_line(names.channel(channel_id)), style="cyan")
    if thread_id is not None:
        text.append(f" ›{thread_id}", style="cyan")
    text.append(" ")


def chat_line(
    chat: Chat, names: Names, *, recovered: bool = False, now: float | None = None
) -> Text:
    """One chat: time, channel, author, content, then its marks."""
    from rich.text import Text

    text = Text()
    if recovered:
        text.append("↺ ", style="magenta")
    text.append(format_time(chat.created_at, now=now), style="dim")
    _where(text, names, chat.channel_id, chat.thread_id)
    text.append(one_line(names.user(chat.author_id)), style="bold")
    text.append(": ")
    text.append(one_line(chat.content))
    if chat.edited:
        text.append(" ✎ (edited)", style="yellow")
    if chat.reactions:
        text.append("  ☺ " + _reactions(chat.reactions), style="green")
    if recovered:
        text.append(" (recovered)", style="magenta")
    text.append(f"  [{chat.id}]", style="dim")
    return text


def event_line(event: Event, names: Names, *, now: float | None = None) -> Text:
    """One event of the stream as one line."""
    from rich.text import Text

    if isinstance(event, ChatSent):
        return chat_line(event.chat, names, recovered=event.recovered, now=now)
    text = Text()
    stamp = event.sent_at if isinstance(event, ChatTyping) else _now_ms()
    text.append(format_time(stamp, now=now), style="dim")
    if isinstance(event, ChatEdited):
        _where(text, names, event.channel_id, event.thread_id)
        text.append(f"✎ edited [{event.chat_id}]: ", style="yellow")
        text.append(one_line(event.content))
    elif isinstance(event, ChatDeleted):
        _where(text, names, event.channel_id, event.thread_id)
        text.append(f"✗ deleted [{event.chat_id}]", style="red")
    elif isinstance(event, ChatReactionsUpdated):
        _where(text, names, event.channel_id, event.thread_id)
        text.append(f"☺ reactions on [{event.chat_id}]: ", style="green")
        text.append(_reactions(event.reactions) or "(none)")
    elif isinstance(event, ChatTyping):
        _where(text, names, event.channel_id, event.thread_id)
        text.append("… " + one_line(names.user(event.user_id)) + " is typing", style="dim italic")
    elif isinstance(event, Gap):
        text = Text(
            f"── gap {format_time(event.since, now=now)} – {format_time(event.until, now=now)}: "
            "disconnected; chats were recovered, but edits, deletions, reactions and "
            "typing in this interval may have been missed ──",
            style="bold yellow",
        )
    elif isinstance(event, (ChannelCreated, ChannelsUpdated)):
        verb = "created" if isinstance(event, ChannelCreated) else "updated"
        text.append(f" + channel #{one_line(event.channel.name)} {verb}", style="cyan")
        text.append(f"  [{event.channel.id}]", style="dim")
    elif isinstance(event, ChannelDeleted):
        text.append(f" - channel #{one_line(names.channel(event.channel_id))} deleted", style="red")
    elif isinstance(event, (UserJoined, UserLeft)):
        arrow = "→ joined" if isinstance(event, UserJoined) else "← left"
        text.append(f" {one_line(names.user(event.user_id))} {arrow}", style="blue")
    elif isinstance(event, UserStatusUpdated):
        online = event.status == "ONLINE"
        text.append(" ● " if online else " ○ ", style="green" if online else "dim")
        text.append(f"{one_line(names.user(event.user_id))} is {event.status.lower()}")
    elif isinstance(event, UnknownEvent):
        text.append(f" ? {one_line(event.type)}: ", style="dim")
        text.append(one_line(encode_event(event).decode("utf-8")), style="dim")
    return text


# --------------------------------------------------------------------------
# Human: whole outputs
# --------------------------------------------------------------------------


def print_chats(chats: Iterable[Chat], names: Names) -> None:
    """Chats one per line, in the order given."""
    console = stdout_console()
    now = time.time()
    for chat in chats:
        console.print(chat_line(chat, names, now=now))


def print_channels(channels: Sequence[FullChannel], title: str = "channels") -> None:
    """The channel tree, ordered by ordinality as the server nests it."""
    from rich.tree import Tree

    tree = Tree(title, guide_style="dim")

    def add(node: Tree, items: Sequence[FullChannel]) -> None:
        for ch in sorted(items, key=lambda c: c.ordinality):
            from rich.text import Text

            label = Text()
            label.append("#" + one_line(ch.name), style="bold cyan")
            label.append(f"  [{ch.id}]", style="dim")
            if ch.description:
                label.append("  " + one_line(ch.description))
            add(node.add(label), ch.children)

    add(tree, channels)
    stdout_console().print(tree)


def print_users(users: Sequence[FullUser]) -> None:
    """Users as a table, online ones first."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("status")
    table.add_column("username")
    table.add_column("nickname")
    table.add_column("id", style="dim")
    ordered = sorted(users, key=lambda u: (u.status.online_status != "ONLINE", u.username))
    for user in ordered:
        online = user.status.online_status == "ONLINE"
        table.add_row(
            "● online" if online else "○ offline",
            one_line(user.username),
            one_line(user.profile.nickname),
            str(user.id),
            style="green" if online else None,
        )
    stdout_console().print(table)


# --------------------------------------------------------------------------
# Connection status on stderr
# --------------------------------------------------------------------------


class StatusReporter:
    """Shows the stream's connection state on stderr while it is not live.

    On a terminal: a rich status line (spinner) while reconnecting, cleared
    once connected again. Otherwise: one plain line when the connection is
    lost and one when it is back, so logs stay readable.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        try:
            self._tty = self._stream.isatty()
        except (AttributeError, ValueError):
            self._tty = False
        self._status: Status | None = None
        self._down = False

    def __call__(self, state: Any) -> None:
        """``on_state`` callback of ``Client.events`` (a ``StreamState``)."""
        kind = getattr(state, "state", "")
        if kind == "reconnecting":
            self._reconnecting(state)
        elif kind == "connected":
            self._connected()
        elif kind == "closed":
            self.close()

    def _reconnecting(self, state: Any) -> None:
        error = getattr(state, "error", None) or "connection lost"
        attempt = getattr(state, "attempt", 0)
        delay = getattr(state, "delay", None)
        when = f", next try in {delay:.1f}s" if delay else ""
        message = f"reconnecting (attempt {attempt}{when}): {error}"
        if self._tty:
            if self._status is None:
                self._status = _console(self._stream).status(message, spinner="dots")
                self._status.start()
            else:
                self._status.update(message)
        elif not self._down:
            print(f"concordctl: {message}", file=self._stream, flush=True)
        self._down = True

    def _connected(self) -> None:
        if self._down:
            self.close()
            print("concordctl: reconnected", file=self._stream, flush=True)
        self._down = False

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
