"""The stream's cursor: what was seen, where recovery starts, what counts as live. No I/O.

:class:`~concordctl.stream.EventStream` moves frames; every decision about
them is a plain method call here, testable with lists (as websockets'
``Protocol`` takes bytes in and hands events out). The stream calls, in order:

1. :meth:`StreamCursor.start` once, with the time the ``since`` cursor stands for;
2. :meth:`~StreamCursor.connected` on each open socket: it returns the
   :class:`Recovery` to run (or None);
3. the stream fetches that recovery's chats and hands them to
   :meth:`~StreamCursor.recovered`, which returns the events to yield: a
   ``Gap`` and the recovered ``ChatSent`` not seen yet, oldest first;
4. :meth:`~StreamCursor.admit` for each live chat, :meth:`~StreamCursor.keeps`
   for each other event: False means skip it;
5. :meth:`~StreamCursor.alive` when a pong proves the connection alive, and
   :meth:`~StreamCursor.disconnected` when it drops: the next gap starts at
   the last moment the connection was known alive.

A chat id claiming a time more than a day ahead is refused by ``admit``
before it reaches the de-duplication window: one bogus id (2^70) would
otherwise make every later chat look old, and so seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from concordctl import protocol as p
from concordctl.recovery import SeenChats, select_recovered, snowflake_id, snowflake_time

__all__ = ["FUTURE_MS", "Recovery", "StreamCursor"]

#: How far ahead of our clock a chat id's time may be before it is refused.
FUTURE_MS = 24 * 3600 * 1000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Recovery:
    """Ask for the chats created after ``after`` (ms); the gap runs ``since``..``until``."""

    after: int
    since: int
    until: int


class StreamCursor:
    """See the module docstring. ``clock`` returns epoch ms (injectable for tests)."""

    def __init__(
        self,
        *,
        since: int | None = None,
        since_time: int | None = None,
        channels: Iterable[int] | None = None,
        margin_ms: int = 120_000,
        window: int = 10_000,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.seen = SeenChats(window)  # the ids already yielded
        self.channels: frozenset[int] | None = frozenset(channels) if channels else None
        self.since = since
        self.since_time = since_time
        self.margin_ms = margin_ms  # createdAt is the sender's clock: ask this much earlier
        self.clock = clock
        # Recovered chats must be newer than this id: the cursor, or what existed
        # when the stream started (refined by the first live chat).
        self.boundary: int | None = since
        self.boundary_exact = since is not None or since_time is not None
        self.connections = 0  # sockets opened so far
        self.alive_at = 0  # epoch ms when the connection was last known alive
        self._after: int | None = None  # the next recovery's query start (ms)
        self._gap_since: int | None = None  # the next gap's start (ms)
        self._id_limit = self._future_limit()
        self.refused = 0  # live or recovered chats refused for ids from the future

    def set_channels(self, ids: Iterable[int] | None) -> None:
        """Keep only these channels' events (None: every channel)."""
        self.channels = frozenset(ids) if ids is not None else None

    def start(self, since_chat_time: int | None = None) -> None:
        """Where the first recovery starts; ``since_chat_time``: the ``since`` chat's time.

        The time of a ``since`` id is read from the id unless given (its
        ``createdAt``, when the stream could fetch the chat).
        """
        if self.since is not None:
            when = snowflake_time(self.since)
            if since_chat_time is not None:
                when = min(when, since_chat_time)
            self._after, self._gap_since = when - self.margin_ms, when
        elif self.since_time is not None:
            self._after = self._gap_since = self.since_time

    def connected(self, at_ms: int, start_boundary: int) -> Recovery | None:
        """A socket opened at ``at_ms``; ``start_boundary``: the newest id that predates it."""
        first = self.connections == 0
        self.connections += 1
        self.alive_at = at_ms
        if first and not self.boundary_exact:
            self.boundary = start_boundary
        if self._after is None or self._gap_since is None:
            return None
        return Recovery(self._after, self._gap_since, at_ms)

    def lost_frame(self, at_ms: int) -> Recovery:
        """A malformed frame (maybe a chat) at ``at_ms``: recover in place."""
        return Recovery(at_ms - self.margin_ms, at_ms, at_ms)

    def recovered(
        self, recovery: Recovery, chats: Iterable[p.Chat], *, complete: bool = True
    ) -> list[p.Event]:
        """The Gap and then the recovered chats not seen yet, oldest first, each once."""
        fresh = select_recovered(
            (c for c in chats if self._plausible(c.id)), self.seen, after_id=self.boundary
        )
        events: list[p.Event] = [
            p.Gap(since=recovery.since, until=recovery.until, unrecovered=not complete)
        ]
        channels = self.channels
        for chat in fresh:
            if self.seen.add(chat.id) and (channels is None or chat.channel_id in channels):
                events.append(p.ChatSent(chat=chat, recovered=True))
        return events

    def admit(self, chat: p.Chat) -> bool:
        """Whether a live chat is to be yielded: new, plausible, in the channels kept."""
        cid = chat.id
        if cid > self._id_limit and not self._plausible(cid):
            return False
        if not self.seen.add(cid):  # the one de-duplication
            return False
        channels = self.channels
        return channels is None or chat.channel_id in channels

    def keeps(self, event: p.Event) -> bool:
        """Whether an event other than a chat is in the channels kept."""
        if self.channels is None:
            return True
        channel = p.event_channel_id(event)
        return channel is None or channel in self.channels

    def alive(self, at_ms: int) -> None:
        """A pong sent at ``at_ms`` came back: nothing before it was missed."""
        self.alive_at = at_ms

    def disconnected(self) -> None:
        """The live connection ended: the next recovery starts where it was last alive."""
        if not self.boundary_exact:
            # Live chats arrive in id order: an unseen id below the first
            # live one was stored before this stream connected.
            first_live = self.seen.first()
            if first_live is not None:
                self.boundary = first_live - 1
            self.boundary_exact = True
        self._gap_since = self.alive_at
        self._after = self.alive_at - self.margin_ms

    def _future_limit(self) -> int:
        return snowflake_id(self.clock() + FUTURE_MS)

    def _plausible(self, chat_id: int) -> bool:
        """False for an id whose time is more than FUTURE_MS ahead (the clock re-read)."""
        if chat_id <= self._id_limit:
            return True
        self._id_limit = self._future_limit()
        if chat_id <= self._id_limit:
            return True
        self.refused += 1
        return False
