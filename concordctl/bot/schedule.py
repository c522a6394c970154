"""Schedules: ``@bot.every``, ``@bot.at``, ``@bot.cron``, ``bot.later``, on a clock tests can move.

::

    @bot.at("09:30", days="mon-fri", tz="Europe/Berlin")
    async def standup() -> None: ...

    @bot.cron("*/15 * * * *")
    async def poll() -> None: ...

    job = bot.later(timedelta(minutes=10), remind, "alice", key="remind-alice")
    job.cancel()

The parts:

* A *schedule* says when a job runs next: :class:`Every` (a fixed period,
  start to start), :class:`DailyAt` (wall-clock times on some weekdays in a
  time zone), :class:`CronSchedule` (a cron expression, through ``croniter``),
  :class:`Once` (``later``). Each is one method, ``next_after(moment)``, and
  does no I/O.
* A :class:`Job` is one scheduled function with a state (:class:`JobState`)
  and the controls users get: ``start()``, ``stop()``, ``await run_now()``,
  ``cancel()``. Periodic handlers carry theirs as ``handler.job``.
* The :class:`Scheduler` runs jobs while the bot runs: one task per started
  job sleeps on the *clock* until the next moment and then hands the job to
  the runtime's runner (which applies the handler timeout, the error hook and
  dead letters). A run never overlaps the previous run of the same job; a run
  that overruns the next moment skips it rather than piling up. Closing the
  scheduler cancels every job task (at shutdown, before ``on_shutdown``).
* The *clock* is :class:`SystemClock` (UTC wall time; long sleeps wake up
  every 30 s to notice a clock change) or :class:`FakeClock`, which moves only
  when a test calls ``advance(...)``: the harness's ``h.advance(minutes=10)``.

Replicas: before each run the scheduler asks the runtime's ``gate`` whether
this process may run that occurrence (the lease, :mod:`concordctl.bot.claims`).
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import inspect
import itertools
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from concordctl.errors import UsageError

__all__ = [
    "Clock",
    "CronSchedule",
    "DailyAt",
    "Every",
    "FakeClock",
    "Job",
    "JobState",
    "Once",
    "Scheduler",
    "SteppedClock",
    "SystemClock",
    "parse_days",
]

log = logging.getLogger("concordctl.bot")

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES = {
    "daily": range(7),
    "every day": range(7),
    "weekdays": range(5),
    "weekends": range(5, 7),
}


# --------------------------------------------------------------------------
# Clocks
# --------------------------------------------------------------------------


class Clock(Protocol):
    """What the scheduler needs from time: now (aware, UTC) and a sleep until a moment."""

    def now(self) -> datetime: ...

    async def sleep_until(self, when: datetime) -> None: ...


class SystemClock:
    """The real clock. Sleeps are cut into 30 s pieces so that a wall-clock
    jump (NTP, a suspended laptop) delays a job by at most that much."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        while True:
            remaining = (when - self.now()).total_seconds()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, 30.0))


class FakeClock:
    """A clock that moves only when told: for tests (``h.advance(minutes=10)``).

    ``advance`` wakes every sleeper whose moment has come; the jobs then run as
    soon as the test awaits anything (``await h.run_job`` or a wait for their
    effect).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or datetime(2026, 1, 5, 8, 0, tzinfo=UTC)).astimezone(UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._order), fut))
        await fut

    def advance(self, delta: timedelta | float | None = None, **parts: float) -> datetime:
        """Move time forward (``advance(minutes=10)``, ``advance(90)`` seconds,
        or a ``timedelta``) and wake the sleepers that are due. Returns the new now."""
        step = (
            delta
            if isinstance(delta, timedelta)
            else timedelta(seconds=delta or 0) + timedelta(**parts)
        )
        if step < timedelta(0):
            raise ValueError("a clock only moves forward")
        self._now += step
        self.wake()
        return self._now

    def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (aware; not before now)."""
        moment = moment.astimezone(UTC)
        if moment < self._now:
            raise ValueError("a clock only moves forward")
        self._now = moment
        self.wake()

    def wake(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    @property
    def next_wakeup(self) -> datetime | None:
        """The earliest moment a sleeper waits for (None: nobody sleeps)."""
        live = [w for w, _, f in self._sleepers if not f.done()]
        return min(live) if live else None


class SteppedClock:
    """Real time plus whatever a test added: the harness's clock.

    Without ``advance`` it is the system clock, so bots that wait for real
    seconds (``@bot.every(seconds=0.05)``) behave as in production; each
    ``advance(minutes=10)`` moves it forward at once and wakes the sleepers due.
    """

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self._moved: asyncio.Event | None = None

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    async def sleep_until(self, when: datetime) -> None:
        while True:
            remaining = (when - self.now()).total_seconds()
            if remaining <= 0:
                return
            if self._moved is None:
                self._moved = asyncio.Event()
            moved = self._moved
            try:
                async with asyncio.timeout(min(remaining, 30.0)):
                    await moved.wait()
            except TimeoutError:
                pass

    def advance(self, delta: timedelta | float | None = None, **parts: float) -> datetime:
        """Move time forward (as :meth:`FakeClock.advance`); returns the new now."""
        step = (
            delta
            if isinstance(delta, timedelta)
            else timedelta(seconds=delta or 0) + timedelta(**parts)
        )
        if step < timedelta(0):
            raise ValueError("a clock only moves forward")
        self.offset += step
        moved, self._moved = self._moved, None
        if moved is not None:
            moved.set()
        return self.now()


# --------------------------------------------------------------------------
# Schedules: when does a job run next?
# --------------------------------------------------------------------------


class Every:
    """Every ``seconds``, start to start; the first run one period after the
    start (or at once with ``now=True``)."""

    def __init__(self, seconds: float, *, now: bool = False) -> None:
        if seconds <= 0:
            raise UsageError("every(seconds=...) must be positive")
        self.period = timedelta(seconds=seconds)
        self.now = now

    def first_after(self, moment: datetime) -> datetime:
        return moment if self.now else moment + self.period

    def next_after(self, moment: datetime, last_start: datetime | None = None) -> datetime:
        if last_start is None:
            return moment + self.period
        nxt = last_start + self.period
        if nxt <= moment:  # the run overran: skip to the next period boundary
            behind = (moment - last_start) // self.period
            nxt = last_start + self.period * (behind + 1)
        return nxt

    def __repr__(self) -> str:
        return f"every {self.period.total_seconds():g} s"


def _zone(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"unknown time zone {tz!r}", hint="use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


def parse_days(days: str | Iterable[str] | None) -> frozenset[int]:
    """``"mon-fri"``, ``"sat,sun"``, ``"weekdays"``, ``"daily"``, names -> weekdays (Mon=0)."""
    if days is None:
        return frozenset(range(7))
    words: list[str]
    if isinstance(days, str):
        words = [w.strip() for w in re.split(r"[,\s]+", days.strip().lower()) if w.strip()]
        if days.strip().lower() in _DAY_ALIASES:
            words = [days.strip().lower()]
    else:
        words = [str(w).strip().lower() for w in days]
    found: set[int] = set()
    for word in words:
        if word in _DAY_ALIASES:
            found.update(_DAY_ALIASES[word])
            continue
        first, dash, last = word.partition("-")
        try:
            a = _day(first)
            b = _day(last) if dash else a
        except ValueError:
            raise UsageError(
                f"invalid days= {days!r}: {word!r} is not a day",
                hint="use names like 'mon-fri', 'sat,sun', 'weekdays' or 'daily'",
            ) from None
        span = range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)]
        found.update(span)
    if not found:
        raise UsageError(f"invalid days= {days!r}: no day given")
    return frozenset(found)


def _day(word: str) -> int:
    key = word[:3]
    if len(word) < 3 or key not in _DAY_NAMES:
        raise ValueError(word)
    return _DAY_NAMES.index(key)


def _parse_time(text: str) -> time:
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*", text)
    if m is None or int(m[1]) > 23 or int(m[2]) > 59 or int(m[3] or 0) > 59:
        raise UsageError(
            f"invalid time {text!r}", hint="give HH:MM (24 h), e.g. '09:30' or '17:05:30'"
        )
    return time(int(m[1]), int(m[2]), int(m[3] or 0))


class DailyAt:
    """At one or more wall-clock times on some weekdays, in a time zone.

    A time that does not exist on a day (the hour skipped when clocks go
    forward) runs at the same offset after the change; a repeated one runs once.
    """

    def __init__(
        self,
        times: str | Iterable[str],
        *,
        days: str | Iterable[str] | None = None,
        tz: str | tzinfo | None = None,
    ) -> None:
        texts = [times] if isinstance(times, str) else list(times)
        if not texts:
            raise UsageError("at() needs a time, e.g. '09:30'")
        self.times = sorted(_parse_time(t) for t in texts)
        self.days = parse_days(days)
        self.tz = _zone(tz)

    def first_after(self, moment: datetime) -> datetime:
        return self.next_after(moment)

    def next_after(self, moment: datetime, last_start: datetime | None = None) -> datetime:
        local = moment.astimezone(self.tz)
        for offset in range(8):
            day = local.date() + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            for t in self.times:
                candidate = datetime.combine(day, t, tzinfo=self.tz).astimezone(UTC)
                if candidate > moment:
                    return candidate
        raise AssertionError("unreachable: every week has one of the days")  # pragma: no cover

    def __repr__(self) -> str:
        days = ",".join(_DAY_NAMES[d] for d in sorted(self.days))
        return f"at {','.join(t.isoformat('minutes') for t in self.times)} on {days} ({self.tz})"


class CronSchedule:
    """A five-field cron expression (``croniter``), in a time zone (UTC by default)."""

    def __init__(self, expr: str, *, tz: str | tzinfo | None = None) -> None:
        from croniter import croniter  # type: ignore[import-untyped]

        if not isinstance(expr, str) or not croniter.is_valid(expr):
            raise UsageError(
                f"invalid cron expression {expr!r}",
                hint="five fields: minute hour day-of-month month day-of-week, e.g. '30 9 * * 1-5'",
            )
        self.expr = expr
        self.tz = _zone(tz)

    def first_after(self, moment: datetime) -> datetime:
        return self.next_after(moment)

    def next_after(self, moment: datetime, last_start: datetime | None = None) -> datetime:
        from croniter import croniter

        it = croniter(self.expr, moment.astimezone(self.tz))
        nxt: datetime = it.get_next(datetime)
        return nxt.astimezone(UTC)

    def __repr__(self) -> str:
        return f"cron {self.expr!r} ({self.tz})"


class Once:
    """Once, ``delay`` after the job is started (``bot.later``)."""

    def __init__(self, delay: float | timedelta) -> None:
        self.delay = delay if isinstance(delay, timedelta) else timedelta(seconds=delay)
        if self.delay < timedelta(0):
            raise UsageError("later() needs a delay of zero or more")

    def first_after(self, moment: datetime) -> datetime:
        return moment + self.delay

    def next_after(self, moment: datetime, last_start: datetime | None = None) -> None:
        return None

    def __repr__(self) -> str:
        return f"once after {self.delay.total_seconds():g} s"


class Schedule(Protocol):
    def first_after(self, moment: datetime) -> datetime: ...

    def next_after(
        self, moment: datetime, last_start: datetime | None = ...
    ) -> datetime | None: ...


# --------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------


class JobState(enum.Enum):
    """``PENDING`` until the bot runs; ``SCHEDULED`` waiting for its moment;
    ``RUNNING``; ``STOPPED`` by ``stop()`` (``start()`` again); ``DONE`` (a
    one-shot ran) and ``CANCELLED`` are final."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    STOPPED = "stopped"
    DONE = "done"
    CANCELLED = "cancelled"


_FINAL = frozenset((JobState.DONE, JobState.CANCELLED))


class Job:
    """One scheduled function: a periodic handler (``handler.job``) or a ``later`` call.

    Attributes: ``name`` (the function's), ``key`` (``later``'s key, or the
    name), ``schedule``, ``state``, ``next_run`` (UTC, None when not
    scheduled), ``runs`` (completed runs) and ``last_error``.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        schedule: Schedule,
        *,
        args: tuple[Any, ...] = (),
        key: str | None = None,
        is_async: bool | None = None,
    ) -> None:
        self.name = name
        self.key = key or name
        self.fn = fn
        self.args = args
        self.schedule = schedule
        self.is_async = inspect.iscoroutinefunction(fn) if is_async is None else is_async
        self.state = JobState.PENDING
        self.next_run: datetime | None = None
        self.runs = 0
        self.last_error: BaseException | None = None
        #: start()/stop() before the bot runs: whether the job starts with it.
        self.enabled = True
        self._scheduler: Scheduler | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None  # runs never overlap

    @property
    def one_shot(self) -> bool:
        return isinstance(self.schedule, Once)

    def start(self) -> None:
        """Schedule the job again after ``stop()`` (or before the bot runs: start with it)."""
        if self.state in _FINAL:
            raise UsageError(f"job {self.key!r} is {self.state.value}; it cannot start again")
        self.enabled = True
        if self._scheduler is not None:
            self._scheduler.launch(self)

    def stop(self) -> None:
        """Stop scheduling the job (a run in progress finishes); ``start()`` resumes it."""
        if self.state in _FINAL:
            return
        self.enabled = False
        self._halt(JobState.STOPPED)

    def cancel(self) -> bool:
        """Cancel the job for good (a pending ``later``); True if it had not run yet."""
        if self.state in _FINAL:
            return False
        fresh = self.runs == 0
        self.enabled = False
        self._halt(JobState.CANCELLED)
        if self._scheduler is not None:
            self._scheduler.forget(self)
        return fresh

    def _halt(self, state: JobState) -> None:
        task, self._task = self._task, None
        self.next_run = None
        running = self.state is JobState.RUNNING
        self.state = state
        if task is not None and not running and task is not asyncio.current_task():
            task.cancel()  # only the wait; a run in progress finishes

    async def run_now(self) -> None:
        """Run the job once, now, as a scheduled run would (timeout, error hook),
        and return when it has finished. The schedule is unchanged."""
        if self._scheduler is None:
            raise UsageError(f"job {self.key!r} can run once the bot runs")
        await self._scheduler.run_once(self, self._scheduler.clock.now(), gated=False)

    def __repr__(self) -> str:
        nxt = f", next {self.next_run.isoformat()}" if self.next_run else ""
        return f"Job({self.key!r}, {self.schedule!r}, {self.state.value}{nxt})"


#: The runtime's way of running one job call under its rules (timeout, error
#: hook, dead letters). It must not raise for the job's own errors.
JobRunner = Callable[[Job], Awaitable[None]]
#: Whether this process may run this occurrence of the job (replica leases).
JobGate = Callable[[Job, datetime], Awaitable[bool]]


class Jobs(Mapping[str, Job]):
    """``bot.jobs``: the jobs by key (periodic handlers by name, ``later`` by its key)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def __getitem__(self, key: str) -> Job:
        return self._jobs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, job: Job) -> None:
        self._jobs[job.key] = job

    def discard(self, job: Job) -> None:
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]

    def __repr__(self) -> str:
        return f"Jobs({list(self._jobs.values())!r})"


class Scheduler:
    """Runs started jobs on a clock until closed. One per bot run."""

    def __init__(
        self,
        clock: Clock,
        runner: JobRunner,
        *,
        gate: JobGate | None = None,
        jobs: Jobs | None = None,
    ) -> None:
        self.clock = clock
        self.runner = runner
        self.gate = gate
        #: Where one-shot jobs are listed while pending (the bot's ``jobs``).
        self.jobs = jobs if jobs is not None else Jobs()
        self._attached: list[Job] = []
        self._running: set[asyncio.Task[None]] = set()
        self.closed = False

    def attach(self, job: Job, *, start: bool = True) -> Job:
        """Take charge of ``job``; start it now if it is enabled and ``start``."""
        if self.closed:
            raise UsageError("the bot is stopping; no new jobs")
        job._scheduler = self
        if job not in self._attached:
            self._attached.append(job)
        if job.one_shot:
            old = self.jobs.get(job.key)
            if old is not None and old is not job and old.one_shot:
                old.cancel()  # later(..., key=k) again replaces the pending one
        self.jobs.add(job)
        if start and job.enabled:
            self.launch(job)
        return job

    def launch(self, job: Job) -> None:
        if self.closed or job.state in _FINAL:
            return
        if job._task is not None and not job._task.done():
            return  # already scheduled
        job.state = JobState.SCHEDULED
        job._task = asyncio.get_running_loop().create_task(
            self._loop(job), name=f"concordctl-job-{job.key}"
        )

    def forget(self, job: Job) -> None:
        if job.one_shot:
            self.jobs.discard(job)
        if job in self._attached:
            self._attached.remove(job)

    async def _loop(self, job: Job) -> None:
        clock = self.clock
        started_at = clock.now()
        nxt: datetime | None = job.schedule.first_after(started_at)
        last: datetime | None = None
        try:
            while nxt is not None:
                job.next_run = nxt
                job.state = JobState.SCHEDULED
                await clock.sleep_until(nxt)
                if job._task is not asyncio.current_task():
                    return  # stopped meanwhile
                last = nxt
                await self.run_once(job, nxt, gated=True)
                if job._task is not asyncio.current_task():
                    return  # stopped or cancelled while it ran
                nxt = job.schedule.next_after(clock.now(), last)
            job.next_run = None
            if job.state is not JobState.CANCELLED:
                job.state = JobState.DONE
            self.forget(job)
        finally:
            if job._task is asyncio.current_task():
                job._task = None

    async def run_once(self, job: Job, moment: datetime, *, gated: bool) -> None:
        if gated and self.gate is not None:
            try:
                allowed = await self.gate(job, moment)
            except Exception as exc:
                log.warning("job %s skipped at %s: %s", job.key, moment.isoformat(), exc)
                return
            if not allowed:
                return  # another replica holds this job
        if job._lock is None:
            job._lock = asyncio.Lock()
        async with job._lock:
            previous = job.state
            job.state = JobState.RUNNING
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                await self.runner(job)
            finally:
                job.runs += 1
                if task is not None:
                    self._running.discard(task)
                if job.one_shot and job.state is JobState.RUNNING:
                    job.state = JobState.DONE
                    job.next_run = None
                    waiting, job._task = job._task, None
                    if waiting is not None and waiting is not task:
                        waiting.cancel()  # run_now() did the one run
                    self.forget(job)
                elif job.state is JobState.RUNNING:
                    job.state = previous if previous is not JobState.RUNNING else JobState.SCHEDULED

    async def close(self) -> None:
        """Cancel every job task and wait for them (runs in progress are cancelled too)."""
        self.closed = True
        tasks = [j._task for j in self._attached if j._task is not None]
        for job in self._attached:
            job._task = None
            job.next_run = None
            if job.state not in _FINAL:
                job.state = JobState.PENDING
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for job in list(self._attached):
            if job.one_shot and job.state is not JobState.DONE:
                job.state = JobState.CANCELLED
                self.jobs.discard(job)
            job._scheduler = None
            job._lock = None
        self._attached.clear()
