"""The loop that runs a bot: lanes, inline handlers, timeouts, watchdog, writes.

``Bot`` (``bot.py``) is the registry users build with decorators; a
:class:`Runtime` is one run of it (``Bot.serve``). The promises are in
``bot.py``'s docstring; this module is how they are kept:

* ``Runtime.pump`` reads the event source; ``dispatch`` hands each event to
  the matching handlers. An ``async def`` without any ``await`` runs inline
  (it cannot suspend, so it needs no task); any other handler gets the event
  appended to its *lane* for the event's channel, and one task per busy lane
  drains it in order (a task per burst, not per event).
* Timeouts are checked by one maintenance task a few times per timeout, which
  cancels the lane task; the lane then goes on with its next event. The same
  task runs the watchdog and touches the health file.
* Writes go through :class:`GuardedClient`: paced by :class:`SendGuard`,
  printed instead of made in a dry run.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from concordctl.bot import (
    _ANY,
    _DEAD_LETTER_KEY,
    Context,
    EventSource,
    SendLoopError,
    SyncContext,
    WriteHook,
    _Hook,
    _Lane,
    _Listener,
    _name_of,
    _Periodic,
    _Targeted,
    describe,
    parse_command,
)
from concordctl.bot.claims import Claim, Coordinator, current_claim
from concordctl.bot.schedule import Job, Scheduler
from concordctl.errors import UsageError
from concordctl.protocol import (
    ChannelCreated,
    ChannelsUpdated,
    Chat,
    ChatSent,
    Event,
    UnknownEvent,
    encode_event,
)

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.bot import Bot

__all__ = ["DeadLetters", "GuardedClient", "Runtime", "SendGuard"]

log = logging.getLogger("concordctl.bot")

# True while the event being handled is a chat the bot wrote itself: the loop
# guard counts sends made in that state.
_answering_self: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "concordctl_answering_self", default=False
)


def _channel_of(ev: Any) -> int | None:
    cls = ev.__class__
    if cls is ChatSent:
        return ev.chat.channel_id  # type: ignore[no-any-return]
    if cls is ChannelCreated or cls is ChannelsUpdated:
        return cast(int, ev.channel.id)
    if cls is UnknownEvent:
        value = ev.data.get("channelId")
        return value if isinstance(value, int) else None
    return getattr(ev, "channel_id", None)


def _author_of(ev: Any) -> int | None:
    if ev.__class__ is ChatSent:
        return ev.chat.author_id
    if ev.__class__ is UnknownEvent:
        value = ev.data.get("userId")
        return value if isinstance(value, int) else None
    return getattr(ev, "user_id", None)


def _content_of(ev: Any) -> str | None:
    if ev.__class__ is ChatSent:
        return ev.chat.content
    content = getattr(ev, "content", None)
    return content if isinstance(content, str) else None


def _thread_of(ev: Any) -> Any:
    if ev.__class__ is ChatSent:
        return ev.chat.thread_id
    return getattr(ev, "thread_id", _ANY)


_NO = object()  # a filter rejected the event


# --------------------------------------------------------------------------
# Writes: rate limit, loop guard, dry run
# --------------------------------------------------------------------------


class SendGuard:
    """Paces the bot's writes and stops self-answer loops.

    Rate: a GCRA token bucket, ``rate`` writes per second with bursts of
    ``burst``; a write over the rate waits (with one warning per episode)
    rather than being dropped. Loop: more than ``loop_limit`` writes within
    ``loop_window`` seconds made while handling the bot's own chats raise
    :class:`SendLoopError`.
    """

    def __init__(self, rate: float, burst: int, loop_limit: int, loop_window: float) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.loop_limit = loop_limit
        self.loop_window = loop_window
        self._tat = 0.0
        self._self_sends: deque[float] = deque()
        self._warned_at = -1e9
        self.throttled = 0

    async def acquire(self, action: str) -> None:
        now = time.monotonic()
        if _answering_self.get():
            window = self._self_sends
            while window and now - window[0] > self.loop_window:
                window.popleft()
            if len(window) >= self.loop_limit:
                log.warning(
                    "loop guard: refused a %s made while handling the bot's own chat "
                    "(more than %d in %.0f s); a handler is answering itself in a loop",
                    action,
                    self.loop_limit,
                    self.loop_window,
                )
                raise SendLoopError(
                    f"refused {action}: handler answers the bot's own chats in a loop",
                    hint="register it with include_self=False or check event.chat.author_id",
                )
            window.append(now)
        if self.rate <= 0:
            return
        interval = 1.0 / self.rate
        tat = max(self._tat, now)
        wait = tat - now - (self.burst - 1) * interval
        self._tat = tat + interval
        if wait > 0:
            self.throttled += 1
            if now - self._warned_at > 30.0:
                self._warned_at = now
                log.warning(
                    "throttling: the bot is writing faster than %g per second "
                    "(burst %d); writes are delayed to stay under it",
                    self.rate,
                    self.burst,
                )
            await asyncio.sleep(wait)


class GuardedClient:
    """The bot's view of its Client: writes are paced, and printed in a dry run.

    Everything else is passed through unchanged.
    """

    def __init__(self, client: Any, guard: SendGuard, dry_run: WriteHook | None) -> None:
        self._client = client
        self._guard = guard
        self._dry = dry_run
        self._fake_ids = 0
        #: With a durable state: sends of a claimed call are recorded (claims.py).
        self.coordinator: Coordinator | None = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            raise UsageError(
                f"bot.client.{name} is not available in an offline dry run",
                hint="give --server (and credentials) so reads can reach a server",
            )
        return getattr(self._client, name)

    async def _write(self, action: str, details: dict[str, Any]) -> bool:
        """Pace the write; True when it should really be done."""
        await self._guard.acquire(action)
        if self._dry is not None:
            self._dry(action, details)
            return False
        if self._client is None:
            raise UsageError(
                f"cannot {action}: this bot runs without a server",
                hint="pass client= to serve(), or a dry_run hook to see the writes",
            )
        return True

    def _fake_chat(self, channel: Any, content: str, thread_id: int | None) -> Chat:
        self._fake_ids += 1
        return Chat(
            id=-self._fake_ids,
            created_at=int(time.time() * 1000),
            author_id=0,
            channel_id=channel if isinstance(channel, int) else 0,
            thread_id=thread_id,
            content=content,
            edited=False,
            reactions={},
        )

    async def send_chat(
        self,
        channel: int | str,
        content: str,
        *,
        thread_id: int | None = None,
        sent_at: int | None = None,
    ) -> Chat:
        args = {"channel": channel, "content": content, "thread_id": thread_id}
        claim = current_claim.get()
        coord = self.coordinator
        if claim is not None and coord is not None and self._dry is None:

            async def send() -> Chat:
                await self._guard.acquire("send")
                return cast(
                    Chat,
                    await self._client.send_chat(
                        channel, content, thread_id=thread_id, sent_at=sent_at
                    ),
                )

            return await coord.send_once(claim, channel, content, send)
        if await self._write("send", args):
            return cast(
                Chat,
                await self._client.send_chat(
                    channel, content, thread_id=thread_id, sent_at=sent_at
                ),
            )
        return self._fake_chat(channel, content, thread_id)

    async def write(self, channel: int | str, content: str, thread_id: int | None = None) -> Any:
        if await self._write("send", {"channel": channel, "content": content}):
            return await self._client.write(channel, content, thread_id=thread_id)
        return None

    async def edit_chat(self, chat_id: int, content: str) -> Chat:
        if await self._write("edit", {"chat_id": chat_id, "content": content}):
            return cast(Chat, await self._client.edit_chat(chat_id, content))
        return self._fake_chat(0, content, None)

    async def delete_chat(self, chat_id: int) -> None:
        if await self._write("delete", {"chat_id": chat_id}):
            await self._client.delete_chat(chat_id)

    async def react(self, chat_id: int, reaction: str) -> None:
        if await self._write("react", {"chat_id": chat_id, "reaction": reaction}):
            await self._client.react(chat_id, reaction)

    async def unreact(self, chat_id: int, reaction: str) -> None:
        if await self._write("unreact", {"chat_id": chat_id, "reaction": reaction}):
            await self._client.unreact(chat_id, reaction)

    async def react_frame(self, chat_id: int, reaction: str, adding: bool = True) -> None:
        action = "react" if adding else "unreact"
        if await self._write(action, {"chat_id": chat_id, "reaction": reaction}):
            await self._client.react_frame(chat_id, reaction, adding=adding)

    async def typing(self, channel: int | str, thread_id: int | None = None) -> None:
        if await self._write("typing", {"channel": channel}):
            await self._client.typing(channel, thread_id=thread_id)


# --------------------------------------------------------------------------
# Dead letters
# --------------------------------------------------------------------------


class DeadLetters:
    """Appends events whose handler failed to an NDJSON file.

    Each line is the event as ``concordctl tail --json`` prints it, plus a
    ``concordctlDeadLetter`` object (handler, error, time): ``--replay`` feeds
    such a line to that handler only.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.count = 0

    def add(self, ev: Event, handler: str, error: str) -> None:
        try:
            obj = json.loads(encode_event(ev))
            obj[_DEAD_LETTER_KEY] = {
                "handler": handler,
                "error": error,
                "at": int(time.time() * 1000),
            }
            line = json.dumps(obj, ensure_ascii=False) + "\n"
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
            self.count += 1
        except OSError as exc:
            log.error("cannot write the dead-letter file %s: %s", self.path, exc)


class Runtime:
    """The running state of a bot: connection, lanes, tasks. One per serve()."""

    def __init__(self, bot: Bot, client: Any, dry_run: WriteHook | None) -> None:
        self.bot = bot
        self.loop = asyncio.get_running_loop()
        self.raw_client = client
        self.guard = SendGuard(bot.send_rate, bot.send_burst, bot.loop_limit, 10.0)
        self.client = GuardedClient(client, self.guard, dry_run)
        self.dead = DeadLetters(bot.dead_letters) if bot.dead_letters else None
        self.slots = asyncio.Semaphore(bot.concurrency)
        self.executor = ThreadPoolExecutor(
            max_workers=bot.concurrency, thread_name_prefix="concordctl-handler"
        )
        self.self_id: int | None = None
        self.ready = asyncio.Event()
        self.stopping = False
        self.finished = False
        self.stop_event = asyncio.Event()
        self.connected = False
        self.restart_requested = False
        self.consumer: asyncio.Task[None] | None = None
        self.lane_tasks: dict[asyncio.Task[None], _Lane] = {}
        self.gate_open = False
        self.gate = asyncio.Event()
        self.restartable = False
        self.periodic_tasks: list[asyncio.Task[None]] = []
        self.backlog = 0
        self.room: asyncio.Future[None] | None = None
        self.last_chat_id = 0  # the newest chat id seen by dispatch (0: none yet)
        self.last_chat: Chat | None = None  # the last chat of the fast path
        self.events_seen = 0
        self.quiet_since = self.loop.time()
        self.seen_at_check: tuple[int, int] = (-1, -1)
        self.reconnects = 0
        self.failures = 0
        self.timeouts = 0
        self.ignore_self = bot.ignore_self
        # Issue 10: jobs on the bot's clock; claims and the cursor on a durable state.
        self.scheduler: Scheduler | None = None
        self.coord: Coordinator | None = Coordinator(bot._state) if bot.durable else None
        self.client.coordinator = self.coord
        self.calls = 0  # handler calls queued by the current dispatch (for the cursor)
        self.coord_adopted: dict[tuple[str, str], Claim] = {}  # taken-over claims to re-run

    # -- lifecycle -------------------------------------------------------

    def request_stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stop_event.set()
        if self.consumer is not None:
            self.consumer.cancel()

    async def main(self, events: EventSource | None) -> None:
        bot = self.bot
        try:
            if self.raw_client is not None:
                me = await self.raw_client.me()
                self.self_id = me.id
                await self.resolve(bot)
            elif any(
                isinstance(lst.channel_ref, str) or isinstance(lst.author_ref, str)
                for lst in bot._all_listeners()
            ):
                raise UsageError(
                    "a channel or author filter names a channel/user, which needs a server",
                    hint="give a server (or use ids in the filters)",
                )
            else:
                self.resolve_offline(bot)
            if self.coord is not None:
                await self.open_state()
            if events is None:
                events = self.client_source()
                self.restartable = True
            else:
                # Not a server stream: "connected" from the start; only a
                # factory can be reopened by the watchdog.
                self.connected = True
                self.restartable = callable(events)
            bot._route_chat()
            maintenance = asyncio.create_task(self.maintain(), name="concordctl-bot-maintenance")
            self.consumer = asyncio.create_task(self.consume(events), name="concordctl-bot-stream")
            if self.stopping:
                self.consumer.cancel()
            await self.wait_connected()
            if not self.stopping and not self.consumer.done():  # done: it failed to start
                await self.run_hooks(bot._on_ready, "on_ready")
                self.start_periodic(bot)
                if self.coord is not None:
                    self.coord.start()
                self.ready.set()
                log.info("bot ready (user id %s)", self.self_id)
                if bot.health_file and self.connected:
                    _touch_health_file(bot.health_file)
            self.gate_open = True
            self.gate.set()
            try:
                await self.consumer
            except asyncio.CancelledError:
                if not self.stopping:
                    raise
            self.stopping = True
            await self.shutdown(bounded=self.stop_event.is_set())
            maintenance.cancel()
            await asyncio.gather(maintenance, return_exceptions=True)
        finally:
            self.stopping = True
            self.finished = True
            self.ready.set()
            self.gate.set()
            for task in [*self.periodic_tasks, *self.lane_tasks]:
                task.cancel()
            if self.scheduler is not None:
                await self.scheduler.close()
            if self.coord is not None:
                await self.coord.close()
            await bot._state.close()
            self.executor.shutdown(wait=False, cancel_futures=True)
            if bot.health_file:
                _remove_health_file(bot.health_file)

    async def wait_connected(self) -> None:
        while not self.connected and not self.stopping:
            if self.consumer is not None and self.consumer.done():
                return
            await asyncio.sleep(0.02)

    async def shutdown(self, bounded: bool) -> None:
        bot = self.bot
        if self.scheduler is not None:
            await self.scheduler.close()
        for task in self.periodic_tasks:
            task.cancel()
        pending = {t for t in self.lane_tasks if not t.done()}
        running = [*pending, *self.periodic_tasks]
        if pending:
            if bounded:
                log.info(
                    "stopping: waiting up to %.1f s for %d running handler lane(s)",
                    bot.grace,
                    len(pending),
                )
            _, late = await asyncio.wait(pending, timeout=bot.grace if bounded else None)
            if late:
                log.warning(
                    "stopping: cancelling %d handler lane(s) after the grace period", len(late)
                )
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=1.0)
        await asyncio.gather(*running, return_exceptions=True)
        await self.run_hooks(self.bot._on_shutdown, "on_shutdown")

    async def resolve(self, bot: Bot) -> None:
        """Turn channel and author names into ids, once (fails fast on a typo)."""
        client = self.raw_client
        cache: dict[tuple[str, int | str], int] = {}
        for lst in bot._all_listeners():
            if lst.channel_ref is not None:
                key = ("c", lst.channel_ref)
                if key not in cache:
                    cache[key] = (
                        lst.channel_ref
                        if isinstance(lst.channel_ref, int)
                        else (await client.channel(lst.channel_ref)).id
                    )
                lst.channel_id = cache[key]
            if lst.author_ref is not None:
                key = ("u", lst.author_ref)
                if key not in cache:
                    cache[key] = (
                        lst.author_ref
                        if isinstance(lst.author_ref, int)
                        else (await client.user(lst.author_ref)).id
                    )
                lst.author_id = cache[key]

    @staticmethod
    def resolve_offline(bot: Bot) -> None:
        for lst in bot._all_listeners():
            if isinstance(lst.channel_ref, int):
                lst.channel_id = lst.channel_ref
            if isinstance(lst.author_ref, int):
                lst.author_id = lst.author_ref

    def client_source(self) -> Callable[[int | None], AsyncIterator[Event]]:
        def on_state(state: Any) -> None:
            name = getattr(state, "state", "")
            if name == "connected":
                if self.connected is False and (self.events_seen or self.cursor()):
                    log.info("stream connected again")
                self.connected = True
                self.quiet_since = self.loop.time()
            elif name in ("reconnecting", "connecting"):
                if self.connected:
                    log.warning(
                        "stream lost (%s); reconnecting", getattr(state, "error", None) or name
                    )
                self.connected = False

        def open_stream(since: int | None) -> AsyncIterator[Event]:
            return cast(
                AsyncIterator[Event], self.raw_client.events(since=since, on_state=on_state)
            )

        return open_stream

    async def adopt(self, new: Bot) -> None:
        """Swap in ``new``'s handlers (reload); see Bot.swap."""
        old = self.bot
        if self.raw_client is not None:
            await self.resolve(new)
        else:
            self.resolve_offline(new)
        for task in self.periodic_tasks:
            task.cancel()
        self.periodic_tasks.clear()
        if self.scheduler is not None:
            await self.scheduler.close()
            self.scheduler = None
        new._route_chat()
        new._runtime = self
        self.bot = new
        old._runtime = self
        self.start_periodic(new)
        await self.run_hooks(new._on_ready, "on_ready")

    # -- the stream ------------------------------------------------------

    async def consume(self, events: EventSource) -> None:
        task = asyncio.current_task()
        assert task is not None
        while True:
            if callable(events):
                it: AsyncIterator[Any] = events(self.cursor() or None)
            else:
                it = aiter(events)
            try:
                await self.pump(it)
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

    def cursor(self) -> int:
        """The newest chat id seen (0: none), where a reopened stream recovers from."""
        last = self.last_chat
        return max(self.last_chat_id, last.id if last is not None else 0)

    async def pump(self, it: AsyncIterator[Any]) -> None:
        dispatch = self.dispatch
        limit = self.bot.max_backlog
        chat_sent = ChatSent
        self_id = self.self_id
        it = aiter(it)  # one iterator for both loops below
        if not self.gate_open:
            # The first event opens the connection; it and the rest wait until
            # on_ready has run (they stay in the socket meanwhile).
            async for ev in it:
                self.connected = True
                await self.gate.wait()
                if self.stopping:
                    return
                self.events_seen += 1
                dispatch(ev)
                break
        async for ev in it:
            if ev.__class__ is chat_sent:
                # The fast path (most traffic): a chat that is not a command,
                # not the bot's own, with only plain await-free handlers.
                bot = self.bot
                fast = bot._chat_fast if self.coord is None else None
                chat = ev.chat
                if (
                    fast is not None
                    and chat.author_id != self_id
                    and not chat.content.startswith(bot.prefix)
                ):
                    self.last_chat = chat  # the stream cursor and the watchdog read it
                    for fn in fast:
                        try:  # iterating __await__ (not send()) spares a StopIteration
                            for _ in fn(ev).__await__():
                                raise RuntimeError("an await-free handler suspended")
                        except Exception as exc:
                            self.on_failure(bot._listener_of(fn), ev, exc)
                    continue
            self.events_seen += 1
            dispatch(ev)
            if self.backlog >= limit:
                await self.wait_for_room()

    async def wait_for_room(self) -> None:
        self.room = self.loop.create_future()
        try:
            await self.room
        finally:
            self.room = None

    def dispatch(self, ev: Any) -> None:
        """Hand one event to every matching handler (no awaiting).

        Await-free handlers run right here; the others get the event queued in
        their lane for this channel. This is the hot path: it is written for
        chat_sent with plain handlers first.
        """
        cls = ev.__class__
        if cls is ChatSent:
            bot = self.bot
            chat = ev.chat
            self.calls = 0
            if chat.id > self.last_chat_id:
                self.last_chat_id = chat.id
            own = chat.author_id == self.self_id
            if chat.content.startswith(bot.prefix) and (
                bot._commands or bot.help_command or bot.unknown_command == "reply"
            ):
                parsed = parse_command(chat.content, bot.prefix)
                if parsed is not None:
                    self.dispatch_command(bot, ev, parsed, own, None)
            route = bot._chat_route
            if route is None:
                route = bot._route_chat()
            self.dispatch_to(route, ev, own, None)
            if self.coord is not None:
                self.coord.cursor.received(chat.id, self.calls)
        elif cls is _Targeted:
            self.dispatch_targeted(ev)
        elif cls is UnknownEvent:
            self.dispatch_to(self.bot._route_unknown(), ev, False, None)
        else:
            bot = self.bot
            route = bot._routes.get(ev.type)
            if route is None:
                route = bot._route(ev.type)
            self.dispatch_to(route, ev, False, None)

    def dispatch_targeted(self, item: _Targeted) -> None:
        """A replayed dead letter: only to the handler that failed on it."""
        ev = item.event
        bot = self.bot
        own = False
        if isinstance(ev, ChatSent):
            own = ev.chat.author_id == self.self_id
            parsed = parse_command(ev.chat.content, bot.prefix)
            if parsed is not None:
                self.dispatch_command(bot, ev, parsed, own, item.handler)
            route = bot._route("chat_sent")
        elif isinstance(ev, UnknownEvent):
            route = bot._route_unknown()
        else:
            route = bot._route(ev.type)
        self.dispatch_to(route, ev, own, item.handler)

    def dispatch_to(
        self, route: tuple[_Listener, ...], ev: Any, own: bool, only: str | None
    ) -> None:
        key: int | None = None
        keyed = False
        for lst in route:
            if only is not None and lst.name != only:
                continue
            if own and not (
                lst.include_self if lst.include_self is not None else not self.ignore_self
            ):
                continue
            extra: Any = None
            if lst.filtered:
                extra = self.accepts(lst, ev)
                if extra is _NO:
                    continue
            if lst.inline and self.coord is None:
                try:
                    for _ in (lst.fn(ev, extra) if lst.pass_match else lst.fn(ev)).__await__():
                        raise RuntimeError("an await-free handler suspended")  # cannot happen
                except Exception as exc:
                    self.on_failure(lst, ev, exc)
                continue
            if not keyed:
                key = ev.chat.channel_id if ev.__class__ is ChatSent else _channel_of(ev)
                keyed = True
            self.enqueue(lst, key, ev, extra, own)

    @staticmethod
    def accepts(lst: _Listener, ev: Any) -> Any:
        """_NO, or the match object (None without match=)."""
        if not lst.recovered and getattr(ev, "recovered", False):
            return _NO
        if lst.channel_ref is not None and _channel_of(ev) != lst.channel_id:
            return _NO
        if lst.author_ref is not None and _author_of(ev) != lst.author_id:
            return _NO
        if lst.thread is not _ANY and _thread_of(ev) != lst.thread:
            return _NO
        if lst.pattern is not None:
            content = _content_of(ev)
            if content is None:
                return _NO
            m = lst.pattern.search(content)
            return _NO if m is None else m
        return None

    def dispatch_command(
        self,
        bot: Bot,
        ev: ChatSent,
        parsed: tuple[str, list[str], str],
        own: bool,
        only: str | None,
    ) -> None:
        name, args, text = parsed
        lst = bot._commands.get(name)
        if lst is None and name == "help" and bot.help_command:
            lst = bot._help
        if only is not None and (lst is None or lst.name != only):
            return
        if own and not (
            lst.include_self
            if lst is not None and lst.include_self is not None
            else not self.ignore_self
        ):
            return
        if lst is None:
            if bot.unknown_command == "reply" and not ev.recovered:
                lst = _UNKNOWN_COMMAND
            else:
                return
        match: Any = None
        if lst.filtered:
            match = self.accepts(lst, ev)
            if match is _NO:
                return
        ctx = Context(bot, ev, name, args, text, bot.prefix, match)
        self.enqueue(lst, ev.chat.channel_id, ev, ctx, own)

    def enqueue(self, lst: _Listener, key: int | None, ev: Event, extra: Any, own: bool) -> None:
        lane = lst.lanes.get(key)
        if lane is None:
            lane = lst.lanes[key] = _Lane(lst, key)
        lane.items.append((ev, extra, own))
        self.backlog += 1
        self.calls += 1
        if lane.task is None:
            task = self.loop.create_task(self.drain(lane))
            lane.task = task
            self.lane_tasks[task] = lane
            task.add_done_callback(self._forget_lane)

    def _forget_lane(self, task: asyncio.Task[None]) -> None:
        self.lane_tasks.pop(task, None)

    # -- running handlers ------------------------------------------------

    async def drain(self, lane: _Lane) -> None:
        """Run one lane's events through its handler, one at a time, in order."""
        lst = lane.listener
        items = lane.items
        fn = lst.fn
        is_command = bool(lst.command)
        pass_match = lst.pass_match
        loop = self.loop
        slots = self.slots
        try:
            while items:
                async with slots:
                    budget = 256  # then give other lanes waiting for a slot a turn
                    while items and budget:
                        budget -= 1
                        ev, extra, own = items.popleft()
                        self.backlog -= 1
                        room = self.room
                        if (
                            room is not None
                            and self.backlog <= self.bot.max_backlog // 2
                            and not room.done()
                        ):
                            room.set_result(None)
                        claim: Claim | None = None
                        if self.coord is not None:
                            claim = await self.claim(lst, ev)
                            if claim is None:
                                continue  # another replica has it, or it was done before
                        lane.current = ev
                        lane.started = loop.time()
                        token = _answering_self.set(True) if own else None
                        claim_token = current_claim.set(claim) if claim is not None else None
                        try:
                            if lst.is_async:
                                if is_command:
                                    await fn(extra)
                                elif pass_match:
                                    await fn(ev, extra)
                                else:
                                    await fn(ev)
                            else:
                                await self.call_sync(lst, ev, extra, is_command, pass_match)
                        except asyncio.CancelledError:
                            task = asyncio.current_task()
                            if lane.cancelling is ev and task is not None and task.uncancel() == 0:
                                self.on_timeout(lst, ev)
                            else:
                                raise
                        except SendLoopError:
                            pass  # already logged as a warning by the guard
                        except Exception as exc:
                            self.on_failure(lst, ev, exc)
                        finally:
                            lane.current = None
                            lane.cancelling = None
                            if token is not None:
                                _answering_self.reset(token)
                            if claim_token is not None:
                                current_claim.reset(claim_token)
                            if claim is not None:
                                await self.finish(claim)
        finally:
            lane.task = None
            if items:
                # Cancelled (shutdown): the rest is not handled.
                self.backlog -= len(items)
                items.clear()
            if lst.lanes.get(lane.key) is lane:
                del lst.lanes[lane.key]

    async def call_sync(
        self, lst: _Listener, ev: Event, extra: Any, is_command: bool, pass_match: bool
    ) -> None:
        ctx = contextvars.copy_context()
        if is_command:
            args: tuple[Any, ...] = (SyncContext(extra, self.loop),)
        elif pass_match:
            args = (ev, extra)
        else:
            args = (ev,)
        await self.loop.run_in_executor(self.executor, lambda: ctx.run(lst.fn, *args))

    def on_failure(self, lst: _Listener, ev: Event, exc: BaseException) -> None:
        self.failures += 1
        log.error("handler %s raised on %s", lst.name, describe(ev), exc_info=exc)
        if self.dead is not None:
            self.dead.add(ev, lst.name, f"{type(exc).__name__}: {exc}")

    def on_timeout(self, lst: _Listener, ev: Event) -> None:
        self.timeouts += 1
        limit = lst.timeout if lst.timeout is not None else self.bot.timeout
        extra = "" if lst.is_async else " (its thread keeps running; it cannot be killed)"
        log.error(
            "handler %s timed out after %.3g s on %s and was cancelled%s",
            lst.name,
            limit,
            describe(ev),
            extra,
        )
        if self.dead is not None:
            self.dead.add(ev, lst.name, f"timed out after {limit:g} s")

    async def run_hooks(self, hooks: list[_Hook], what: str) -> None:
        for hook in hooks:
            try:
                await self.call_plain(hook.fn, hook.is_async, self.bot.timeout)
            except Exception:
                log.exception("%s hook %s raised", what, hook.name)

    async def call_plain(self, fn: Callable[[], Any], is_async: bool, limit: float | None) -> None:
        try:
            async with asyncio.timeout(limit):
                if is_async:
                    await fn()
                else:
                    ctx = contextvars.copy_context()
                    await self.loop.run_in_executor(self.executor, ctx.run, fn)
        except TimeoutError:
            log.error("%s timed out after %.3g s and was cancelled", _name_of(fn), limit)

    def start_periodic(self, bot: Bot) -> None:
        coord = self.coord
        gate = None
        if coord is not None and coord.shared:

            async def gate(job: Job, moment: Any) -> bool:
                return await coord.may_run(job.key)

        self.scheduler = Scheduler(bot.clock, self.run_job, gate=gate, jobs=bot.jobs)
        for job in bot._scheduled:
            self.scheduler.attach(job)
        for job in bot._later:
            self.scheduler.attach(job)
        bot._later.clear()

    async def run_job(self, job: Job) -> None:
        """One run of a scheduled job, under the handler timeout; errors are logged."""
        # A later() made in a handler must not send under that handler's claim.
        token = current_claim.set(None)
        try:
            await self.call_plain(lambda: job.fn(*job.args), job.is_async, self.bot.timeout)
        except SendLoopError:
            pass
        except Exception as exc:
            job.last_error = exc
            self.failures += 1
            log.exception("periodic task %s raised", job.name)
        finally:
            current_claim.reset(token)

    # -- claims (a durable state: restart recovery and replicas) ---------

    async def open_state(self) -> None:
        """Open the state; start the stream at the saved cursor; re-run unfinished claims."""
        coord = self.coord
        assert coord is not None
        saved = await coord.open()
        if saved > self.last_chat_id:
            self.last_chat_id = saved  # the stream opens since= here and recovers the rest
        coord.redispatch = self.rerun
        coord.probe = self.find_sent
        if coord.shared:
            log.info("state: %s (replica %s)", coord.handle.backend.kind, coord.owner)
        await coord.sweep()

    def rerun(self, claim: Claim) -> None:
        assert claim.event is not None
        self.coord_adopted[(claim.handler, claim.key)] = claim
        self.dispatch(_Targeted(claim.event, claim.handler))

    async def claim(self, lst: _Listener, ev: Event) -> Claim | None:
        coord = self.coord
        assert coord is not None
        chat_id = ev.chat.id if isinstance(ev, ChatSent) else None
        try:
            from concordctl.bot.claims import event_key

            adopted = self.coord_adopted.pop((lst.name, event_key(ev)), None)
            if adopted is not None:
                return adopted
            for attempt in range(3):
                try:
                    return await coord.acquire(lst.name, ev)
                except Exception as exc:  # the database is briefly away: try again
                    if attempt == 2:
                        log.error("cannot claim %s for %s: %s", describe(ev), lst.name, exc)
                        return None
                    await asyncio.sleep(0.2 * (attempt + 1))
            return None
        finally:
            if chat_id is not None:
                coord.cursor.settled(chat_id)

    async def finish(self, claim: Claim) -> None:
        assert self.coord is not None
        try:
            await self.coord.finish(claim)
        except Exception as exc:
            log.warning("cannot mark %s/%s done: %s", claim.handler, claim.key, exc)

    async def find_sent(self, channel: int | str, content: str, after_id: int) -> list[Chat]:
        """Chats the bot may have sent already (a re-run after a kill between send and record)."""
        if self.raw_client is None:
            return []
        try:
            # The bot's own newest chats in that channel (not the channel's latest:
            # by the time a claim is taken over many others may have been sent).
            latest = await self.raw_client.search_chats(
                channel=channel, author=self.self_id, limit=500
            )
        except Exception as exc:
            log.warning("cannot check what was already sent: %s", exc)
            return []
        return [
            c
            for c in sorted(latest, key=lambda c: c.id)
            if c.author_id == self.self_id and c.content == content and c.id > after_id
        ]

    async def periodic(self, job: _Periodic) -> None:
        delay = 0.0 if job.now else job.seconds
        while True:
            await asyncio.sleep(delay)
            started = self.loop.time()
            try:
                await self.call_plain(job.fn, job.is_async, self.bot.timeout)
            except SendLoopError:
                pass
            except Exception:
                log.exception("periodic task %s raised", job.name)
            # Keep the period fixed from start to start; an overrun skips ahead.
            elapsed = self.loop.time() - started
            delay = job.seconds - (elapsed % job.seconds) if elapsed > 0 else job.seconds

    # -- maintenance: timeouts, watchdog, health -------------------------

    def tick(self) -> float:
        bounds = [1.0]
        for lst in self.bot._all_listeners():
            limit = lst.timeout if lst.timeout is not None else self.bot.timeout
            if limit:
                bounds.append(limit / 4)
        if self.bot.watchdog:
            bounds.append(self.bot.watchdog / 4)
        return max(0.01, min(bounds))

    async def maintain(self) -> None:
        last_touch = -1e9
        while True:
            await asyncio.sleep(self.tick())
            now = self.loop.time()
            self.sweep_timeouts(now)
            self.check_watchdog(now)
            if self.bot.health_file and now - last_touch >= 1.0 and self.healthy(now):
                last_touch = now
                _touch_health_file(self.bot.health_file)

    def healthy(self, now: float) -> bool:
        if not self.connected or self.stopping:
            return False
        wd = self.bot.watchdog
        return not (wd and now - self.quiet_since > wd)

    def sweep_timeouts(self, now: float) -> None:
        default = self.bot.timeout
        for task, lane in list(self.lane_tasks.items()):
            if lane.current is None or lane.cancelling is not None:
                continue
            limit = lane.listener.timeout if lane.listener.timeout is not None else default
            if limit and now - lane.started > limit:
                lane.cancelling = lane.current
                task.cancel()

    def check_watchdog(self, now: float) -> None:
        seen = (self.events_seen, self.cursor())
        if seen != self.seen_at_check:
            self.seen_at_check = seen
            self.quiet_since = now
            return
        wd = self.bot.watchdog
        if not wd or self.stopping or now - self.quiet_since <= wd:
            return
        self.quiet_since = now
        if self.consumer is None or self.consumer.done():
            return
        if not self.restartable:
            log.warning("watchdog: no event for %.0f s (this source cannot be reopened)", wd)
            return
        log.warning("watchdog: no event for %.0f s; reopening the stream", wd)
        self.restart_requested = True
        self.consumer.cancel()


def _touch_health_file(path: str | os.PathLike[str]) -> None:
    # A few bytes of metadata: cheap enough for the loop, once a second.
    try:
        Path(path).touch()
    except OSError as exc:
        log.warning("cannot touch the health file %s: %s", path, exc)


def _remove_health_file(path: str | os.PathLike[str]) -> None:
    try:
        Path(path).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove the health file %s: %s", path, exc)


async def _reply_unknown(ctx: Context) -> None:
    hint = f"; try {ctx.prefix}help" if ctx.bot.help_command else ""
    await ctx.reply(f"unknown command {ctx.prefix}{ctx.command}{hint}")


_UNKNOWN_COMMAND = _Listener(
    name="unknown-command",
    fn=_reply_unknown,
    is_async=True,
    order=0,
    types=frozenset(("chat_sent",)),
    command=("?",),
)
