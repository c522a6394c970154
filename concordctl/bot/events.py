"""The event-type names that ``@bot.on`` accepts, checked when the file loads
rather than at the first event, and the one-line description of an event for
logs. What an event's channel, author, thread and content are is
``concordctl.protocol``'s answer (``event_channel_id`` and the others), the
same for the bot, the stream and the CLI.
"""

from __future__ import annotations

import difflib
from typing import Any

from concordctl.errors import UsageError
from concordctl.protocol import (
    EVENT_CLASSES,
    EVENT_TYPES,
    ChatSent,
    Event,
    UnknownEvent,
)

__all__ = ["ANY", "check_filter", "describe", "event_types"]

#: "no thread filter" (None already means "not in a thread").
ANY: Any = object()


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
