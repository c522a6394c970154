"""The feed: events from a source into dispatch, with the stream cursor.

The source is an async iterable (tests, replays) or a factory called with
the cursor, the newest chat id seen, so the stream can be reopened (by the
watchdog) and recover what it missed. Where the cursor starts comes from a
pluggable :class:`CursorStore` (a run without one starts from now); bot
state (part 2) stores it so a restarted bot recovers the chats sent while it
was down.

Before dispatch every event is offered to the pending waiters. The first
event marks the stream connected; it and the rest wait at the gate until
``on_ready`` has run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

from concordctl.protocol import ChatSent, Event

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.bot.dispatch import Dispatcher
    from concordctl.bot.lanes import Lanes
    from concordctl.bot.waiters import Waiters
    from concordctl.protocol import Chat

__all__ = ["CursorStore", "EventSource", "Feed", "client_stream"]

log = logging.getLogger("concordctl.bot")

#: Where a bot's events come from: an async iterable (tests, replays), or a
#: factory called with the last chat id seen, so the bot can reopen the stream
#: (the watchdog does) and recover what it missed.
EventSource = AsyncIterable[Event] | Callable[[int | None], AsyncIterator[Event]]


class CursorStore(Protocol):
    """Keeps the stream cursor (the newest chat id handled) across runs."""

    async def load(self) -> int | None: ...

    async def save(self, chat_id: int) -> None: ...


class Feed:
    """Reads one event source into a dispatcher until it ends or is cancelled."""

    def __init__(
        self,
        source: EventSource,
        dispatcher: Dispatcher,
        lanes: Lanes,
        waiters: Waiters,
        *,
        self_id: int | None,
        start: int | None,
        restartable: bool,
        connected: bool,
    ) -> None:
        self._source = source
        self._dispatcher = dispatcher
        self._lanes = lanes
        self._waiters = waiters
        self._self_id = self_id
        self.start = start or 0  # where the cursor started (from the CursorStore)
        self.restartable = restartable  # a factory can be reopened; an iterable cannot
        self.connected = connected
        self.gate = asyncio.Event()  # set once on_ready has run
        self.stopping = False
        self.restart_requested = False
        self.events_seen = 0
        self.reconnects = 0
        self._last_chat: Chat | None = None  # the last chat of the fast path

    def cursor(self) -> int:
        """The newest chat id seen (0: none), where a reopened stream recovers from."""
        last = self._last_chat
        return max(self.start, self._dispatcher.last_chat_id, last.id if last is not None else 0)

    async def consume(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        source = self._source
        while True:
            it: AsyncIterator[Any] = (
                source(self.cursor() or None) if callable(source) else aiter(source)
            )
            try:
                await self._pump(it)
                return  # a finite source ended
            except asyncio.CancelledError:
                if self.restart_requested and not self.stopping:
                    self.restart_requested = False
                    task.uncancel()
                    self.reconnects += 1
                    continue
                raise
            finally:
                closer = getattr(it, "aclose", None)
                if closer is not None:
                    try:
                        await closer()
                    except Exception as exc:  # closing a broken stream must not mask why
                        log.debug("closing the event stream: %r", exc)

    async def _pump(self, it: AsyncIterator[Any]) -> None:
        dispatcher = self._dispatcher
        lanes = self._lanes
        pending = self._waiters.pending  # (len(waiters) would be a call per event)
        chat_sent = ChatSent
        self_id = self._self_id
        it = aiter(it)  # one iterator for both loops below
        if not self.gate.is_set():
            async for ev in it:
                self.connected = True
                await self.gate.wait()
                if self.stopping:
                    return
                self._one(ev)
                break
        async for ev in it:
            if ev.__class__ is not chat_sent or pending:
                self._one(ev)
            else:  # a chat no waiter can take
                table = dispatcher.table
                assert table is not None
                chat = ev.chat
                fast = table.chat_fast
                prefixed = chat.content.startswith(table.options.prefix)
                plan = None
                if prefixed and fast is not None:
                    head, _, rest = chat.content.partition(" ")
                    plan = dispatcher.plans.get(head)
                if (
                    fast is None
                    or (prefixed and plan is None)
                    or chat.author_id == self_id
                    or dispatcher.claimed
                ):
                    self.events_seen += 1  # _one's work, for a chat no waiter can take
                    dispatcher.chat(ev, prefixed)
                else:
                    # The fast path (most traffic): what dispatcher.chat() would
                    # do, for a chat that is not the bot's own, when every
                    # chat_sent handler is a plain await-free one and the chat is
                    # no command, or one with a plan (plans.py).
                    self._last_chat = chat
                    if plan is not None:
                        self.events_seen += 1
                        refused = plan(ev, rest)
                        if refused is not None:
                            dispatcher.refuse(ev, refused, False)
                    for fn in fast:
                        try:  # iterating __await__ (not send()) spares a StopIteration
                            for _ in fn(ev).__await__():
                                raise RuntimeError("an await-free handler suspended")
                        except Exception as exc:
                            route = next(r for r in table.chat_listeners if r.fn is fn)
                            dispatcher.inline_failed(route, ev, exc)
                    if plan is None:
                        continue  # nothing queued: the lanes cannot be fuller
            if lanes.backlog >= lanes.max_backlog:  # lanes.full, without a call per event
                await lanes.wait_for_room()

    def _one(self, ev: Any) -> None:
        self.events_seen += 1
        if self._waiters and self._waiters.offer(ev):
            self._dispatcher.dispatch_answered(ev)
        else:
            self._dispatcher.dispatch(ev)


def client_stream(
    client: Any, feed_of: Callable[[], Feed | None], heard: Callable[[], None]
) -> Callable[[int | None], Any]:
    """A source over ``client.events()`` that keeps the feed's ``connected`` up to date."""

    def on_state(state: Any) -> None:
        feed = feed_of()
        if feed is None:
            return
        name = getattr(state, "state", "")
        if name == "connected":
            if not feed.connected and (feed.events_seen or feed.cursor()):
                log.info("stream connected again")
            feed.connected = True
            heard()
        elif name in ("reconnecting", "connecting"):
            if feed.connected:
                log.warning("stream lost (%s); reconnecting", getattr(state, "error", None) or name)
            feed.connected = False

    def open_stream(since: int | None) -> Any:
        return client.events(since=since, on_state=on_state)

    return open_stream
