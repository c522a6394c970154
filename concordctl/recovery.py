"""What a stream missed while it was disconnected: the decisions, no I/O.

Concord has no resume, so after a reconnect the stream asks ``GET /chats``
for what it missed. This module decides what to ask and what to keep:

* :func:`recover_missed_chats` pages through ``GET /chats?after=`` (per
  channel when filtered) until an empty page;
* :class:`SeenChats` remembers which chat ids were already yielded, in
  bounded memory, so nothing is yielded twice across the live/recovered
  boundary;
* :func:`select_recovered` keeps the unseen chats above a boundary id, in id
  order (the server's order: ``createdAt`` is the sender's clock);
* :func:`snowflake_time` / :func:`snowflake_id` convert between ids and
  time, as upstream's ids carry the server's clock.

Everything here is testable with plain lists and a fake fetch function.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable, Sequence
from typing import Protocol

from concordctl import protocol as p
from concordctl.ids import EPOCH_MS, snowflake_id, snowflake_time

__all__ = [
    "SNOWFLAKE_EPOCH_MS",
    "FetchChats",
    "SeenChats",
    "recover_missed_chats",
    "select_recovered",
    "snowflake_id",
    "snowflake_time",
]

log = logging.getLogger("concordctl.stream.recovery")

#: Upstream's snowflake epoch (2021-10-10T00:00:00Z); ids carry ms since it << 22.
SNOWFLAKE_EPOCH_MS = EPOCH_MS


class SeenChats:
    """The ids of the recent chats already yielded, in bounded memory.

    Ids are recorded in two generations of at most ``window`` ids each (plain
    lists: appending is what the live stream does per chat, and it is half
    the cost of a set insert); the set used for lookups is built lazily, on
    the rare lookup of an id not above ``top`` (the largest id seen, so the
    usual newer chat needs no lookup). When a generation is dropped,
    ``floor`` becomes the largest id seen so far at that point; any id at or
    below it counts as seen (ids grow with time: it is older than all kept).
    """

    __slots__ = ("_index", "_indexed", "_rotated_top", "floor", "old", "recent", "top", "window")

    def __init__(self, window: int = 10_000) -> None:
        self.window = window
        self.recent: list[int] = []
        self.old: list[int] = []
        self.floor = -1
        self.top = -1
        self._rotated_top = -1
        self._index: set[int] | None = None
        self._indexed = 0

    def __contains__(self, chat_id: int) -> bool:
        if chat_id > self.top:
            return False
        if chat_id <= self.floor:
            return True
        index = self._index
        if index is None:
            index = self._index = set(self.old)
            self._indexed = 0
        if self._indexed < len(self.recent):
            index.update(self.recent[self._indexed :])
            self._indexed = len(self.recent)
        return chat_id in index

    def add(self, chat_id: int) -> bool:
        """Record ``chat_id``; False if it was already seen (a duplicate)."""
        if chat_id > self.top:
            self.top = chat_id
        elif chat_id in self:
            return False
        self.recent.append(chat_id)
        if len(self.recent) >= self.window:
            self.rotate()
        return True

    def rotate(self) -> None:
        """Start a new generation, forgetting the oldest one."""
        if self.old:
            self.floor = max(self.floor, self._rotated_top)
        self._rotated_top = self.top
        self.old = self.recent
        self.recent = []
        self._index = None

    def first(self) -> int | None:
        """The oldest id still recorded."""
        if self.old:
            return self.old[0]
        return self.recent[0] if self.recent else None

    def __len__(self) -> int:
        return len(self.recent) + len(self.old)


def select_recovered(
    chats: Iterable[p.Chat], seen: SeenChats, *, after_id: int | None = None
) -> list[p.Chat]:
    """The chats not yet yielded, oldest (smallest id) first, each once.

    Sorted by id, not ``createdAt``: ids are assigned by the server in the
    order it stored the chats, which is the order the live stream uses.
    """
    fresh: dict[int, p.Chat] = {}
    for chat in chats:
        cid = chat.id
        if cid in seen or (after_id is not None and cid <= after_id):
            continue
        fresh[cid] = chat
    return [fresh[cid] for cid in sorted(fresh)]


class FetchChats(Protocol):
    """One page of ``GET /chats`` (newest first)."""

    def __call__(
        self, *, channel_id: int | None, after: int, page: int, size: int
    ) -> Awaitable[list[p.Chat]]: ...


async def recover_missed_chats(
    fetch: FetchChats,
    *,
    after: int,
    channel_ids: Sequence[int] | None,
    page_size: int = 100,
    max_pages: int = 10_000,
) -> list[p.Chat]:
    """Every chat with ``createdAt > after`` (per channel if given), unordered.

    Pages until a page is empty (not merely short: a server may cap ``size``)
    or brings nothing new (a server that ignores ``page``). Newest-first pages
    with chats arriving meanwhile shift older chats to later pages, which
    repeats some (de-duplicated by the caller) but skips none.
    """
    found: dict[int, p.Chat] = {}
    for channel_id in channel_ids if channel_ids else [None]:
        for page in range(max_pages):
            chats = await fetch(channel_id=channel_id, after=after, page=page, size=page_size)
            before = len(found)
            for chat in chats:
                found[chat.id] = chat
            if not chats or len(found) == before:
                break
        else:
            log.warning("recovery stopped after %d pages of channel %s", max_pages, channel_id)
    return list(found.values())
