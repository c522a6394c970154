"""Lanes: ordered, bounded, time-limited execution of handler calls.

Each route has one *lane* per channel (events without a channel share one):
a route sees the events of one channel one at a time, in stream order, while
lanes of other routes or channels run concurrently. One task drains a busy
lane (a task per burst, not per event). At most ``concurrency`` calls run at
once (a semaphore); at most ``max_backlog`` items wait, beyond which the
reader is asked to pause (:meth:`Lanes.wait_for_room`).

Timeouts: :meth:`Lanes.sweep` (called a few times per timeout by the runtime's
maintenance) cancels a lane task whose current call has run too long; the
lane then goes on with its next item.

Suspension: a handler that waits for something (a reply, a reaction) calls
:meth:`Lanes.suspended` around the wait. Its lane goes on without it (a new
task takes over the rest of the items), it gives back its concurrency slot,
and its timeout clock stops until the wait ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from concordctl.bot.routes import Route

__all__ = ["Lane", "Lanes"]

log = logging.getLogger("concordctl.bot")

#: (event, payload, own): what one call of a route needs.
Item = tuple[Any, Any, bool]
Runner = Callable[[Route, Any, Any, bool], Awaitable[None]]
OnTimeout = Callable[[Route, Any, Any], None]

_current_lane: contextvars.ContextVar[Lane | None] = contextvars.ContextVar(
    "concordctl_lane", default=None
)


@dataclass(eq=False)
class Lane:
    """One route's queue for one channel, and the call it is running."""

    route: Route
    key: int | None
    items: deque[Item] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    current: Any = None  # the event being handled (None: between calls, or suspended)
    payload: Any = None
    started: float = 0.0
    cancelling: Any = None  # the event the timeout cancelled
    holds_slot: bool = False
    used: float = 0.0  # seconds of the timeout spent before a suspension


class Lanes:
    """Every lane of one run, the concurrency slots and the backlog."""

    def __init__(
        self,
        *,
        concurrency: int,
        max_backlog: int,
        run: Runner,
        on_timeout: OnTimeout,
        limit_of: Callable[[Route], float | None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(concurrency)
        self.max_backlog = max_backlog
        self._run = run  # does the call; handles the call's own errors
        self._on_timeout = on_timeout
        self._limit_of = limit_of
        self._lanes: dict[tuple[int, int | None], Lane] = {}
        self.tasks: dict[asyncio.Task[None], Lane] = {}  # draining or suspended
        self.backlog = 0  # items waiting in lanes
        self.enqueued = 0  # items ever queued (the cursor counts the calls of a chat)
        self._room: asyncio.Future[None] | None = None

    # -- feeding ---------------------------------------------------------

    def enqueue(self, route: Route, key: int | None, item: Item) -> None:
        lane = self._lanes.get((id(route), key))
        if lane is None:
            lane = self._lanes[(id(route), key)] = Lane(route, key)
        lane.items.append(item)
        self.backlog += 1
        self.enqueued += 1
        if lane.task is None:
            self._start(lane)

    def _start(self, lane: Lane) -> None:
        task = self._loop.create_task(self._drain(lane))
        lane.task = task
        self.tasks[task] = lane
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.tasks.pop(task, None)

    @property
    def full(self) -> bool:
        return self.backlog >= self.max_backlog

    async def wait_for_room(self) -> None:
        """Until the backlog is down to half (the reader pauses meanwhile)."""
        self._room = self._loop.create_future()
        try:
            await self._room
        finally:
            self._room = None

    # -- draining --------------------------------------------------------

    async def _drain(self, lane: Lane) -> None:
        """Run one lane's items, one at a time, in order."""
        me = asyncio.current_task()
        route = lane.route
        items = lane.items
        run = self._run
        slots = self._slots
        loop = self._loop
        _current_lane.set(lane)
        try:
            while items:
                ev, payload, own = items.popleft()
                self.backlog -= 1
                room = self._room
                if room is not None and self.backlog <= self.max_backlog // 2 and not room.done():
                    room.set_result(None)
                await slots.acquire()
                lane.holds_slot = True
                lane.current = ev
                lane.payload = payload
                lane.started = loop.time()
                lane.used = 0.0
                try:
                    await run(route, ev, payload, own)
                except asyncio.CancelledError:
                    if lane.cancelling is ev and me is not None and me.uncancel() == 0:
                        self._on_timeout(route, ev, payload)
                    else:
                        raise
                finally:
                    lane.current = None
                    lane.payload = None
                    lane.cancelling = None
                    if lane.holds_slot:
                        lane.holds_slot = False
                        slots.release()
                if lane.task is not me:
                    return  # suspended meanwhile: another task drains this lane now
        finally:
            if lane.task is me:
                lane.task = None
                if items:  # cancelled (shutdown): the rest is not handled
                    self.backlog -= len(items)
                    items.clear()
                if self._lanes.get((id(route), lane.key)) is lane:
                    del self._lanes[(id(route), lane.key)]

    @contextlib.asynccontextmanager
    async def suspended(self) -> AsyncIterator[None]:
        """Around a wait inside a handler: the lane, the slot and the clock go free."""
        lane = _current_lane.get()
        me = asyncio.current_task()
        if lane is None or lane.current is None or me not in self.tasks:
            yield  # not in a lane (an inline call, a periodic task): nothing to free
            return
        if lane.task is me:
            # Hand the rest of the lane to a new lane object and task; this task
            # keeps the old lane object (for its clock) until the handler returns.
            rest = Lane(lane.route, lane.key, items=lane.items)
            lane.items = deque()
            key = (id(lane.route), lane.key)
            if self._lanes.get(key) is lane:
                if rest.items:
                    self._lanes[key] = rest
                else:
                    del self._lanes[key]
            lane.task = None
            if rest.items:
                self._start(rest)
        ev = lane.current
        lane.used += self._loop.time() - lane.started
        lane.current = None
        if lane.holds_slot:
            lane.holds_slot = False
            self._slots.release()
        try:
            yield
        finally:
            lane.current = ev
            lane.started = self._loop.time() - lane.used

    # -- timeouts and shutdown -------------------------------------------

    def sweep(self, now: float) -> None:
        """Cancel every call that has run past its route's timeout."""
        for task, lane in list(self.tasks.items()):
            if lane.current is None or lane.cancelling is not None:
                continue
            limit = self._limit_of(lane.route)
            if limit and now - lane.started > limit:
                lane.cancelling = lane.current
                task.cancel()

    def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    async def finish(self, grace: float | None) -> None:
        """Wait for running lanes (up to ``grace`` seconds), then cancel the rest."""
        pending = {t for t in self.tasks if not t.done()}
        if not pending:
            return
        if grace is not None:
            log.info(
                "stopping: waiting up to %.1f s for %d running handler lane(s)",
                grace,
                len(pending),
            )
        _, late = await asyncio.wait(pending, timeout=grace)
        if late:
            log.warning("stopping: cancelling %d handler lane(s) after the grace period", len(late))
            for task in late:
                task.cancel()
            await asyncio.wait(late, timeout=1.0)
        await asyncio.gather(*pending, return_exceptions=True)
