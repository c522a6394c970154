"""A bot's state and schedules, as one run of the runtime uses them (issue 10).

:class:`BotState` is what a ``Bot`` hands the runtime besides its route
table: the state handle (``store.py``), the clock, the jobs by key and the
``later`` jobs made before the bot ran. :class:`Durable` is the runtime's side
of it for one run: the scheduler (``schedule.py``) and, on a durable state,
the claim coordinator (``claims.py``) with the stream cursor it keeps.
Neither imports the registry or the runtime.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from concordctl.bot.claims import Claim, Coordinator, current_claim, event_key
from concordctl.bot.routes import Route, is_async, name_of
from concordctl.bot.schedule import Clock, Job, Jobs, Once, Scheduler, SystemClock
from concordctl.bot.store import INTERNAL_PREFIX, StateHandle, Store
from concordctl.errors import UsageError
from concordctl.protocol import Chat, ChatSent, Event

__all__ = ["BotState", "Durable", "StateCursor", "StateMixin"]

log = logging.getLogger("concordctl.bot")


class BotState:
    """Where a bot's store and cursor live, its clock and its jobs."""

    def __init__(
        self, spec: str | os.PathLike[str] | None, clock: Clock | None, lease: float = 6.0
    ) -> None:
        self.handle = StateHandle(os.fspath(spec) if spec is not None else None)
        self.clock: Clock = clock or SystemClock()
        self.lease = lease  # seconds a silent replica keeps its claims and jobs
        self.jobs = Jobs()
        self.later: list[Job] = []  # later() before the bot runs
        self.scheduler: Scheduler | None = None  # set while a run has one

    @property
    def durable(self) -> bool:
        return self.handle.spec not in (None, ":memory:")

    def store(self, namespace: str) -> Store:
        if isinstance(namespace, str) and namespace.startswith(INTERNAL_PREFIX):
            raise UsageError(
                f"store namespaces starting with {INTERNAL_PREFIX!r} are the bot's own"
            )
        return Store(lambda: self.handle, namespace)  # follows a later bot.state = ...

    def add_later(self, job: Job) -> Job:
        sched = self.scheduler
        if sched is not None and not sched.closed:
            sched.attach(job)
            return job
        old = self.jobs.get(job.key)
        if old is not None and old.one_shot:
            old.cancel()
            if old in self.later:
                self.later.remove(old)
        self.later.append(job)
        self.jobs.add(job)
        return job


class StateMixin:
    """The state and job members of ``Bot`` (``bot.state``, ``store``, ``later``, ``jobs``)."""

    _state: BotState
    _runtime: Any

    @property
    def state(self) -> str | None:
        """Where the store and the stream cursor live (None: in memory)."""
        return self._state.handle.spec

    @state.setter
    def state(self, value: str | os.PathLike[str] | None) -> None:
        if self._runtime is not None and not self._runtime.finished:
            raise UsageError("state= cannot change while the bot runs")
        self._state.handle = StateHandle(os.fspath(value) if value is not None else None)

    @property
    def clock(self) -> Clock:
        """The clock schedules run on (the harness steps its own)."""
        return self._state.clock

    @clock.setter
    def clock(self, value: Clock) -> None:
        self._state.clock = value

    @property
    def durable(self) -> bool:
        """True when the state outlives the process (a file or PostgreSQL)."""
        return self._state.durable

    @property
    def jobs(self) -> Jobs:
        """Scheduled jobs by key: periodic handlers by name, ``later`` jobs by key."""
        return self._state.jobs

    def store(self, namespace: str) -> Store:
        """A namespace of the bot's state: ``get``, ``set``, ``delete``, ``update``, ``items``."""
        return self._state.store(namespace)

    def later(
        self,
        delay: float | timedelta,
        fn: Callable[..., Any],
        *args: Any,
        key: str | None = None,
    ) -> Job:
        """Run ``fn(*args)`` once after ``delay`` (seconds or a timedelta); a :class:`Job`.

        ``key`` names it in ``bot.jobs`` (a pending job with the same key is
        replaced). It runs in this process, under the handler timeout and error
        rules, and is cancelled at shutdown.
        """
        job = Job(name_of(fn), fn, Once(delay), args=args, key=key, is_async=is_async(fn))
        return self._state.add_later(job)


class StateCursor:
    """The runtime's CursorStore on a durable state: the coordinator's safe cursor."""

    def __init__(self, durable: Durable) -> None:
        self._durable = durable

    async def load(self) -> int | None:
        return await self._durable.open() or None

    async def save(self, chat_id: int) -> None:
        coord = self._durable.coord
        if coord is not None and coord.book is not None:
            await coord.save_cursor()  # what every handler has claimed, not just seen


#: Runs one periodic route under the handler rules; the error it raised, if any.
RunPlain = Callable[[Route], Awaitable[BaseException | None]]


class Durable:
    """One run's scheduler and (on a durable state) claims, leases and cursor."""

    def __init__(self, state: BotState, run_plain: RunPlain) -> None:
        self.state = state
        self._run_plain = run_plain
        self.coord: Coordinator | None = (
            Coordinator(state.handle, lease=state.lease) if state.durable else None
        )
        self.scheduler: Scheduler | None = None
        self.routes: dict[Job, Route] = {}
        self.adopted: dict[tuple[str, str], Claim] = {}
        self.redispatch: Callable[[Event, str], None] | None = None
        self.find_sent: Callable[[int | str, str, int], Awaitable[list[Chat]]] | None = None

    async def open(self) -> int:
        coord = self.coord
        if coord is None:
            return 0
        saved = await coord.open()
        coord.redispatch = self._rerun
        coord.probe = self._probe
        if coord.shared:
            log.info("state: %s (replica %s)", coord.handle.backend.kind, coord.owner)
        await coord.sweep()
        return saved

    def _rerun(self, claim: Claim) -> None:
        assert claim.event is not None and self.redispatch is not None
        self.adopted[(claim.handler, claim.key)] = claim
        self.redispatch(claim.event, claim.handler)

    async def _probe(self, channel: int | str, content: str, after: int) -> list[Chat]:
        return [] if self.find_sent is None else await self.find_sent(channel, content, after)

    # -- schedules -------------------------------------------------------

    def start_jobs(self, periodic: tuple[Route, ...]) -> None:
        coord = self.coord
        gate = None
        if coord is not None and coord.shared:

            async def gate(job: Job, moment: Any) -> bool:
                return await coord.may_run(job.key)

        sched = Scheduler(self.state.clock, self._run_job, gate=gate, jobs=self.state.jobs)
        self.scheduler = self.state.scheduler = sched
        self.routes = {}
        for route in periodic:
            job = route.job
            if isinstance(job, Job):
                self.routes[job] = route
                sched.attach(job)
        for job in self.state.later:
            sched.attach(job)
        self.state.later.clear()

    async def stop_jobs(self) -> None:
        sched, self.scheduler = self.scheduler, None
        if sched is not None:
            if self.state.scheduler is sched:
                self.state.scheduler = None
            await sched.close()

    async def _run_job(self, job: Job) -> None:
        # A later() made in a handler must not send under that handler's claim.
        token = current_claim.set(None)
        try:
            route = self.routes.get(job)
            if route is None:
                fn, args = job.fn, job.args
                route = Route(
                    name=job.name,
                    fn=lambda: fn(*args),
                    kind="every",
                    is_async=job.is_async,
                )
            error = await self._run_plain(route)
            if error is not None:
                job.last_error = error
        finally:
            current_claim.reset(token)

    # -- claims around a handler call ------------------------------------

    def start(self) -> None:
        if self.coord is not None:
            self.coord.start()

    def received(self, chat_id: int, calls: int) -> None:
        if self.coord is not None:
            self.coord.cursor.received(chat_id, calls)

    async def claim(self, handler: str, ev: Event) -> Claim | None:
        """The claim on this call (None: another replica has it, or it was done)."""
        coord = self.coord
        assert coord is not None
        chat_id = ev.chat.id if isinstance(ev, ChatSent) else None
        try:
            adopted = self.adopted.pop((handler, event_key(ev)), None)
            if adopted is not None:
                return adopted
            for attempt in range(3):
                try:
                    return await coord.acquire(handler, ev)
                except Exception as exc:  # the database is briefly away: try again
                    if attempt == 2:
                        log.error("cannot claim %s for %s: %s", ev.type, handler, exc)
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

    async def close(self) -> None:
        await self.stop_jobs()
        if self.coord is not None:
            await self.coord.close()
        await self.state.handle.close()
