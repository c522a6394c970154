"""The runtime: one run of a route table, from connecting to stopped.

A :class:`Runtime` receives the route table (which carries the options) and
never the ``Bot``; everything that belongs to one run lives here or in the
parts it owns: the lanes (``lanes.py``), the calls (``calls.py``), the
dispatcher and its resolved filters (``dispatch.py``), the feed and its
cursor (``feed.py``), the waiters, the cooldown buckets, the paced client
(``writes.py``).

The lifecycle is :class:`State`, and every transition is in
:data:`TRANSITIONS` and made by :meth:`Lifecycle.to`::

    NEW -> STARTING -> CONNECTING -> READY -> STOPPING -> STOPPED
       (any state may go to STOPPING, and STARTING/CONNECTING straight to STOPPED on an error)
"""

# A wait's timeout is part of its API (`wait_for(..., timeout=30)`), as in discord.py.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import enum
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from concordctl.bot.calls import Calls, Observer, Reporter
from concordctl.bot.context import Context
from concordctl.bot.dispatch import Dispatcher, Filters
from concordctl.bot.feed import CursorStore, EventSource, Feed, client_stream
from concordctl.bot.lanes import Lanes
from concordctl.bot.policy import CooldownBuckets, passes
from concordctl.bot.routes import Route, RouteTable
from concordctl.bot.state import BotState, Durable, StateCursor
from concordctl.bot.waiters import Waiters
from concordctl.bot.writes import DeadLetters, GuardedClient, SendGuard, WriteHook
from concordctl.errors import UsageError
from concordctl.protocol import Event

__all__ = ["TRANSITIONS", "Lifecycle", "Runtime", "State", "resolve_filters"]

log = logging.getLogger("concordctl.bot")


class State(enum.Enum):
    NEW = "new"  # made, not started
    STARTING = "starting"  # resolving names against the server
    CONNECTING = "connecting"  # the stream is opening; events wait at the gate
    READY = "ready"  # on_ready has run; events flow
    STOPPING = "stopping"  # no new events; running handlers get the grace period
    STOPPED = "stopped"  # on_shutdown has run (or the start failed)


TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.NEW: frozenset((State.STARTING, State.STOPPING, State.STOPPED)),
    State.STARTING: frozenset((State.CONNECTING, State.STOPPING, State.STOPPED)),
    State.CONNECTING: frozenset((State.READY, State.STOPPING, State.STOPPED)),
    State.READY: frozenset((State.STOPPING, State.STOPPED)),
    State.STOPPING: frozenset((State.STOPPED,)),
    State.STOPPED: frozenset(),
}


class Lifecycle:
    """The state of a run; ``ready`` is set once READY (or STOPPED, so waiters wake)."""

    def __init__(self) -> None:
        self.state = State.NEW
        self.ready = asyncio.Event()
        self.stop_requested = asyncio.Event()  # stop() was called (a bounded shutdown)

    def to(self, new: State) -> None:
        if new is self.state:
            return
        if new not in TRANSITIONS[self.state]:
            raise RuntimeError(f"bot runtime: no transition {self.state.name} -> {new.name}")
        self.state = new
        if new in (State.READY, State.STOPPED):
            self.ready.set()

    @property
    def stopping(self) -> bool:
        return self.state in (State.STOPPING, State.STOPPED)


async def resolve_filters(table: RouteTable, client: Any) -> dict[Route, Filters]:
    """Channel and author names to ids, once (a typo fails the start, with suggestions)."""
    cache: dict[tuple[str, int | str], int] = {}

    async def one(kind: str, ref: int | str) -> int:
        if isinstance(ref, int):
            return ref
        if client is None:
            raise UsageError(
                "a channel or author filter names a channel/user, which needs a server",
                hint="give a server (or use ids in the filters)",
            )
        key = (kind, ref)
        if key not in cache:
            found = await (client.channel(ref) if kind == "c" else client.user(ref))
            cache[key] = found.id
        return cache[key]

    found: dict[Route, Filters] = {}
    for route in table.event_routes():
        if route.channels or route.authors:
            channels = frozenset([await one("c", r) for r in route.channels]) or None
            authors = frozenset([await one("u", r) for r in route.authors]) or None
            found[route] = Filters(channels, authors)
    return found


class Runtime:
    """The running state of a bot: connection, lanes, tasks. One per ``serve()``."""

    def __init__(
        self,
        table: RouteTable,
        client: Any,
        *,
        dry_run: WriteHook | None = None,
        cursor: CursorStore | None = None,
        observers: tuple[Observer, ...] = (),
        state: BotState | None = None,
    ) -> None:
        o = table.options
        self.table = table
        self.loop = asyncio.get_running_loop()
        self.life = Lifecycle()
        self.raw_client = client  # None: an offline run (replay, tests)
        self.guard = SendGuard(o.send_rate, o.send_burst, o.loop_limit, 10.0)
        self.client = GuardedClient(client, self.guard, dry_run)
        self.self_id: int | None = None
        self.ignore_self = o.ignore_self
        self.executor = ThreadPoolExecutor(
            max_workers=o.concurrency, thread_name_prefix="concordctl-handler"
        )
        dead = DeadLetters(o.dead_letters) if o.dead_letters else None
        self.reporter = Reporter(self, dead, self.executor)
        self.reporter.observers.extend(observers)
        self.calls = Calls(self, self.reporter, self.executor, CooldownBuckets())
        self.lanes = Lanes(
            concurrency=o.concurrency,
            max_backlog=max(1, o.max_backlog),
            run=self.calls.run,
            on_timeout=self.calls.timed_out,
            limit_of=lambda route: route.limit(self.table.options.timeout),
        )
        self.waiters = Waiters()
        self.dispatcher = Dispatcher(self, self.lanes, self.calls)
        # Schedules, and on a durable state the claims and the cursor (state.py).
        self.durable = Durable(state or BotState(None, None), self.calls.run_plain)
        self.calls.durable = self.durable if self.durable.coord is not None else None
        self.client.coordinator = self.durable.coord
        self.durable.redispatch = self.dispatcher.redispatch
        if self.durable.coord is not None:
            self.dispatcher.claimed = True
            self.dispatcher.on_chat = self.durable.received
        self.durable.find_sent = self._find_sent
        if self.durable.coord is not None:
            if cursor is not None:
                raise UsageError("give serve() a cursor= or the bot a durable state=, not both")
            cursor = StateCursor(self.durable)
        self._cursor_store = cursor
        self.feed: Feed | None = None
        self._consumer: asyncio.Task[None] | None = None

    # -- what contexts and calls read (the Host protocols) ----------------

    async def may_run(self, route: Route, ctx: Context) -> bool:
        """Whether the asker of ``ctx`` passes ``route``'s filters and checks (for help)."""
        ev = ctx.event
        if ev is not None and not self.dispatcher.permits(route, ev):
            return False
        try:
            return await passes(route.checks, ctx)
        except Exception:
            return False

    async def wait_for_event(
        self,
        types: frozenset[str] | None,
        predicate: Callable[[Any], bool],
        timeout: float | None,
        *,
        consume: bool = False,
    ) -> Event:
        async with self.lanes.suspended():
            return await self.waiters.wait(types, predicate, timeout, consume=consume)

    @property
    def running(self) -> bool:
        return self.life.state is not State.STOPPED

    @property
    def finished(self) -> bool:
        return self.life.state is State.STOPPED

    @property
    def connected(self) -> bool:
        return self.feed is not None and self.feed.connected

    # -- lifecycle -------------------------------------------------------

    def request_stop(self) -> None:
        self.life.stop_requested.set()
        if self.life.stopping:
            return
        if self.feed is not None:
            self.feed.stopping = True
        if self._consumer is not None:
            self._consumer.cancel()

    async def main(self, events: EventSource | None) -> None:
        life = self.life
        maintenance: asyncio.Task[None] | None = None
        try:
            life.to(State.STARTING)
            if self.raw_client is not None:
                self.self_id = (await self.raw_client.me()).id
            self.dispatcher.use(self.table, await resolve_filters(self.table, self.raw_client))
            start = await self._cursor_store.load() if self._cursor_store is not None else None
            restartable = events is None or callable(events)
            source = events if events is not None else self._client_source()
            self.feed = Feed(
                source,
                self.dispatcher,
                self.lanes,
                self.waiters,
                self_id=self.self_id,
                start=start,
                restartable=restartable,
                connected=events is not None,  # not a server stream: "connected" from the start
            )
            life.to(State.CONNECTING)
            maintenance = asyncio.create_task(self._maintain(), name="concordctl-bot-maintenance")
            self._consumer = asyncio.create_task(self.feed.consume(), name="concordctl-bot-stream")
            if life.stop_requested.is_set():
                self.request_stop()
            await self._wait_connected()
            if not life.stop_requested.is_set() and not self._consumer.done():
                await self._run_hooks(self.table.on_ready)
                self._start_periodic()
                self.durable.start()
                life.to(State.READY)
                log.info("bot ready (user id %s)", self.self_id)
                self._touch_health()
            self.feed.gate.set()
            try:
                await self._consumer
            except asyncio.CancelledError:
                if not life.stop_requested.is_set():
                    raise
            self.feed.stopping = True
            life.to(State.STOPPING)
            await self._shutdown(bounded=life.stop_requested.is_set())
        finally:
            if maintenance is not None:
                maintenance.cancel()
                await asyncio.gather(maintenance, return_exceptions=True)
            if self.feed is not None:
                self.feed.stopping = True
                self.feed.gate.set()
            life.to(State.STOPPED)
            self.lanes.cancel_all()
            self.waiters.cancel_all()
            await self.durable.close()
            self.executor.shutdown(wait=False, cancel_futures=True)
            if self.table.options.health_file:
                _remove_health_file(self.table.options.health_file)

    async def _wait_connected(self) -> None:
        assert self.feed is not None and self._consumer is not None
        while not self.feed.connected and not self.life.stop_requested.is_set():
            if self._consumer.done():
                return
            await asyncio.sleep(0.02)

    async def _shutdown(self, bounded: bool) -> None:
        await self.durable.stop_jobs()
        await self.lanes.finish(self.table.options.grace if bounded else None)
        await self._run_hooks(self.table.on_shutdown)
        await self.reporter.drain()
        await self._save_cursor()

    async def adopt(self, table: RouteTable, state: BotState | None = None) -> None:
        """Swap in a new route table (``--reload``): the old on_shutdown, then the new on_ready.

        ``state``: the new bot's jobs (they keep this run's state handle, already open,
        and this run's clock).
        """
        filters = await resolve_filters(table, self.raw_client)
        await self.durable.stop_jobs()
        if state is not None:
            state.handle = self.durable.state.handle
            state.clock = self.durable.state.clock
            self.durable.state = state
        await self._run_hooks(self.table.on_shutdown)
        self.table = table
        self.ignore_self = table.options.ignore_self
        self.dispatcher.use(table, filters)
        self._start_periodic()
        await self._run_hooks(table.on_ready)

    async def _run_hooks(self, hooks: tuple[Route, ...]) -> None:
        for hook in hooks:
            await self.calls.run_plain(hook)

    def _start_periodic(self) -> None:
        self.durable.start_jobs(self.table.periodic)

    async def _find_sent(self, channel: int | str, content: str, after_id: int) -> list[Any]:
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

    def _client_source(self) -> Callable[[int | None], Any]:
        def heard() -> None:
            self._quiet_since = self.loop.time()

        return client_stream(self.raw_client, lambda: self.feed, heard)

    # -- maintenance: timeouts, watchdog, health, cursor -----------------

    def _tick(self) -> float:
        o = self.table.options
        bounds = [1.0]
        for route in self.table.event_routes():
            limit = route.limit(o.timeout)
            if limit:
                bounds.append(limit / 4)
        if o.watchdog:
            bounds.append(o.watchdog / 4)
        return max(0.01, min(bounds))

    async def _maintain(self) -> None:
        last_touch = last_save = -1e9
        self._quiet_since = self.loop.time()
        seen_at_check = (-1, -1)
        while True:
            await asyncio.sleep(self._tick())
            now = self.loop.time()
            self.lanes.sweep(now)
            feed = self.feed
            if feed is None:
                continue
            seen = (feed.events_seen, feed.cursor())
            if seen != seen_at_check:
                seen_at_check = seen
                self._quiet_since = now
            else:
                self._check_watchdog(now)
            if now - last_touch >= 1.0 and self._healthy(now):
                last_touch = now
                self._touch_health()
            if self._cursor_store is not None and now - last_save >= 1.0:
                last_save = now
                await self._save_cursor()

    def _healthy(self, now: float) -> bool:
        if not self.connected or self.life.stopping:
            return False
        wd = self.table.options.watchdog
        return not (wd and now - self._quiet_since > wd)

    def _check_watchdog(self, now: float) -> None:
        wd = self.table.options.watchdog
        feed = self.feed
        if not wd or feed is None or self.life.stopping or now - self._quiet_since <= wd:
            return
        self._quiet_since = now
        if self._consumer is None or self._consumer.done():
            return
        if not feed.restartable:
            log.warning("watchdog: no event for %.0f s (this source cannot be reopened)", wd)
            return
        log.warning("watchdog: no event for %.0f s; reopening the stream", wd)
        feed.restart_requested = True
        self._consumer.cancel()

    async def _save_cursor(self) -> None:
        if self._cursor_store is None or self.feed is None:
            return
        position = self.feed.cursor()
        if position:
            try:
                await self._cursor_store.save(position)
            except Exception:
                log.exception("cannot save the stream cursor")

    def _touch_health(self) -> None:
        path = self.table.options.health_file
        if path and self.connected:
            try:  # a few bytes of metadata: cheap enough for the loop, once a second
                Path(path).touch()
            except OSError as exc:
                log.warning("cannot touch the health file %s: %s", path, exc)


def _remove_health_file(path: str | os.PathLike[str]) -> None:
    try:
        Path(path).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove the health file %s: %s", path, exc)
