"""What the bot reads off an event: its channel, author, thread and content.

Events of different types keep these in different places (``chat_sent`` in
its chat, ``chat_typing`` beside it, an unknown type in its raw ``data``);
these accessors hide that, so filters and lanes can ask one question of any
event. Also the event-type names that ``@bot.on`` accepts, checked when the
file loads rather than at the first event.
"""

from __future__ import annotations

import difflib
from typing import Any, cast

from concordctl.errors import UsageError
from concordctl.protocol import (
    EVENT_CLASSES,
    EVENT_TYPES,
    ChannelCreated,
    ChannelsUpdated,
    ChatSent,
    Event,
    UnknownEvent,
)

__all__ = [
    "ANY",
    "AUTHOR_TYPES",
    "CHANNEL_TYPES",
    "CONTENT_TYPES",
    "THREAD_TYPES",
    "author_of",
    "channel_of",
    "check_filter",
    "content_of",
    "describe",
    "event_types",
    "thread_of",
]

#: "no thread filter" (None already means "not in a thread").
ANY: Any = object()

CONTENT_TYPES = frozenset(("chat_sent", "chat_edited"))
AUTHOR_TYPES = frozenset(
    ("chat_sent", "chat_typing", "user_joined", "user_left", "user_status_updated")
)
CHANNEL_TYPES = frozenset(
    (
        "chat_sent",
        "chat_edited",
        "chat_deleted",
        "chat_reactions_updated",
        "chat_typing",
        "channel_created",
        "channel_deleted",
        "channels_updated",
    )
)
THREAD_TYPES = frozenset(
    ("chat_sent", "chat_edited", "chat_deleted", "chat_reactions_updated", "chat_typing")
)


def channel_of(ev: Any) -> int | None:
    cls = ev.__class__
    if cls is ChatSent:
        return cast(int, ev.chat.channel_id)
    if cls is ChannelCreated or cls is ChannelsUpdated:
        return cast(int, ev.channel.id)
    if cls is UnknownEvent:
        value = ev.data.get("channelId")
        return value if isinstance(value, int) else None
    return getattr(ev, "channel_id", None)


def author_of(ev: Any) -> int | None:
    if ev.__class__ is ChatSent:
        return ev.chat.author_id
    if ev.__class__ is UnknownEvent:
        value = ev.data.get("userId")
        return value if isinstance(value, int) else None
    return getattr(ev, "user_id", None)


def content_of(ev: Any) -> str | None:
    if ev.__class__ is ChatSent:
        return ev.chat.content
    content = getattr(ev, "content", None)
    return content if isinstance(content, str) else None


def thread_of(ev: Any) -> Any:
    if ev.__class__ is ChatSent:
        return ev.chat.thread_id
    return getattr(ev, "thread_id", ANY)


def describe(ev: Event | None) -> str:
    """One line about an event for logs: type, ids, and the start of the content."""
    if ev is None:
        return "no event"
    if isinstance(ev, ChatSent):
        c = ev.chat
        text = c.content if len(c.content) <= 60 else c.content[:57] + "..."
        rec = " (recovered)" if ev.recovered else ""
        return f"chat_sent #{c.id} in channel {c.channel_id} by {c.author_id}{rec}: {text!r}"
    if isinstance(ev, UnknownEvent):
        return f"{ev.type} (unknown type)"
    parts = [ev.type]
    for attr in ("chat_id", "channel_id", "user_id"):
        value = getattr(ev, attr, None)
        if value is not None:
            parts.append(f"{attr}={value}")
    return " ".join(parts)


def _valid_types_text() -> str:
    return ", ".join(sorted(EVENT_TYPES)) + ', or "*" for every event'


def event_types(event_type: str | type[Any]) -> tuple[frozenset[str] | None, bool]:
    """(the wire types a registration covers or None for all, unknown-only)."""
    if isinstance(event_type, str):
        if event_type == "*":
            return None, False
        if event_type in EVENT_TYPES:
            return frozenset((event_type,)), False
        close = difflib.get_close_matches(event_type, sorted(EVENT_TYPES), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(
            f"unknown event type {event_type!r}",
            hint=f"{hint}valid types: {_valid_types_text()}",
        )
    if event_type is UnknownEvent:
        return frozenset(), True
    for name, cls in EVENT_CLASSES.items():
        if event_type is cls:
            return frozenset((name,)), False
    raise UsageError(
        f"not an event type: {event_type!r}",
        hint=f"pass a type name or an event class; valid types: {_valid_types_text()}",
    )


def check_filter(types: frozenset[str] | None, allowed: frozenset[str], what: str) -> None:
    """A filter on a type that has no such field is an error at registration."""
    if types is None:  # "*": the filter applies to the events that have the field
        return
    missing = sorted(types - allowed)
    if missing:
        raise UsageError(
            f"{what} cannot filter {', '.join(missing)} events (they have no such field)",
            hint=f"{what} applies to {', '.join(sorted(allowed))}",
        )
