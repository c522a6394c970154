"""How things look for a person: lines, trees and tables, and nothing else.

Pure formatting: every function here returns text or a rich renderable and
writes nothing (:mod:`concordctl.cli.output` writes). Chats and events are
one line each: time, channel, author, content, and a mark for edits (✎),
deletions (✗), reactions (☺), typing (…), recovered chats (↺) and the gap
marker. Every string that came from a server passes through
:func:`concordctl.cli.sanitize.one_line`, so a chat, a channel name or a user
name cannot move the cursor or recolour the terminal.

Rendering needs names (channel and author), which take I/O to look up; the
command resolves them and passes a :class:`Names` here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from concordctl.cli.sanitize import one_line
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
    encode_event,
)

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table
    from rich.text import Text
    from rich.tree import Tree

__all__ = [
    "Names",
    "channel_tree",
    "chat_line",
    "event_line",
    "format_time",
    "one_line",
    "plural",
    "user_table",
]


def plural(n: int, word: str) -> str:
    """``1 event``, ``2 events``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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


def channel_tree(channels: Sequence[FullChannel], title: str = "channels") -> Tree:
    """The channel tree, ordered by ordinality as the server nests it."""
    from rich.text import Text
    from rich.tree import Tree

    tree = Tree(one_line(title), guide_style="dim")

    def add(node: Tree, items: Sequence[FullChannel]) -> None:
        for ch in sorted(items, key=lambda c: c.ordinality):
            label = Text()
            label.append("#" + one_line(ch.name), style="bold cyan")
            label.append(f"  [{ch.id}]", style="dim")
            if ch.description:
                label.append("  " + one_line(ch.description))
            add(node.add(label), ch.children)

    add(tree, channels)
    return tree


def user_table(users: Sequence[FullUser]) -> Table:
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
    return table
