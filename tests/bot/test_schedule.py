"""Schedules on a fake clock: when jobs run, and the controls users get."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from concordctl.bot.schedule import (
    CronSchedule,
    DailyAt,
    Every,
    FakeClock,
    Job,
    Jobs,
    JobState,
    Once,
    Scheduler,
    SteppedClock,
    parse_days,
)
from concordctl.errors import UsageError
from tests.helpers.timing import async_wait_until

MONDAY_8 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # a Monday


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# -- when: the schedules alone -------------------------------------------


def test_daily_at_weekdays_in_a_time_zone() -> None:
    s = DailyAt("09:30", days="mon-fri", tz="Europe/Berlin")  # UTC+1 in January
    assert s.next_after(MONDAY_8) == utc(2026, 1, 5, 8, 30)
    assert s.next_after(utc(2026, 1, 5, 8, 30)) == utc(2026, 1, 6, 8, 30)  # strictly after
    assert s.next_after(utc(2026, 1, 9, 9, 0)) == utc(2026, 1, 12, 8, 30)  # Friday -> Monday


def test_daily_at_follows_daylight_saving_time() -> None:
    s = DailyAt("09:30", tz="Europe/Berlin")
    assert s.next_after(utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 7, 30)  # now UTC+2


def test_daily_at_several_times_and_default_utc() -> None:
    s = DailyAt(["17:00", "09:00:15"], days="sat,sun")
    assert s.next_after(MONDAY_8) == utc(2026, 1, 10, 9, 0, 15)
    assert s.next_after(utc(2026, 1, 10, 9, 0, 15)) == utc(2026, 1, 10, 17, 0)


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("sat,sun", {5, 6}),
        ("Fri-Mon", {4, 5, 6, 0}),
        ("weekdays", {0, 1, 2, 3, 4}),
        ("weekends", {5, 6}),
        ("daily", set(range(7))),
        (None, set(range(7))),
        (["monday", "wednesday"], {0, 2}),
        ("tue thu", {1, 3}),
    ],
)
def test_parse_days(days: str | list[str] | None, expected: set[int]) -> None:
    assert parse_days(days) == expected


@pytest.mark.parametrize("days", ["funday", "mon-xyz", "", "m"])
def test_bad_days_are_usage_errors(days: str) -> None:
    with pytest.raises(UsageError, match="days="):
        parse_days(days)


@pytest.mark.parametrize("text", ["9.30", "24:00", "09:60", "noon", "09:30:61"])
def test_bad_times_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="invalid time"):
        DailyAt(text)


def test_bad_zone_and_cron_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown time zone"):
        DailyAt("09:30", tz="Mars/Olympus")
    with pytest.raises(UsageError, match="invalid cron expression"):
        CronSchedule("every monday")
    with pytest.raises(UsageError, match="positive"):
        Every(0)
    with pytest.raises(UsageError):
        Once(-1)


def test_cron_in_utc_and_in_a_zone() -> None:
    assert CronSchedule("30 9 * * 1-5").next_after(MONDAY_8) == utc(2026, 1, 5, 9, 30)
    assert CronSchedule("*/15 * * * *").next_after(utc(2026, 1, 5, 8, 7)) == utc(2026, 1, 5, 8, 15)
    berlin = CronSchedule("30 9 * * 1-5", tz="Europe/Berlin")
    assert berlin.next_after(utc(2026, 1, 9, 9, 0)) == utc(2026, 1, 12, 8, 30)


def test_every_keeps_its_period_and_skips_what_an_overrun_missed() -> None:
    s = Every(60)
    start = MONDAY_8
    assert s.first_after(start) == start + timedelta(seconds=60)
    assert Every(60, now=True).first_after(start) == start
    assert s.next_after(start + timedelta(seconds=5), start) == start + timedelta(seconds=60)
    # A run that took 150 s skips the boundaries it overran.
    assert s.next_after(start + timedelta(seconds=150), start) == start + timedelta(seconds=180)


# -- running: a scheduler on a fake clock --------------------------------


class Recorder:
    def __init__(self, clock: FakeClock | SteppedClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, tuple[object, ...], datetime]] = []
        self.block: asyncio.Event | None = None

    async def __call__(self, job: Job) -> None:
        self.calls.append((job.key, job.args, self.clock.now()))
        if self.block is not None and job.key != "witness":  # see after_due_jobs_ran
            await self.block.wait()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(MONDAY_8)


@pytest.fixture
async def sched(clock: FakeClock) -> AsyncIterator[tuple[Scheduler, Recorder]]:
    rec = Recorder(clock)
    s = Scheduler(clock, rec)
    try:
        yield s, rec
    finally:
        await s.close()


async def until_waiting(clock: FakeClock, job: Job) -> None:
    """Wait until ``job`` waits on the clock for a moment after now."""
    await async_wait_until(
        lambda: (
            job.state is JobState.SCHEDULED
            and job.next_run is not None
            and job.next_run > clock.now()
            and clock.next_wakeup is not None
        ),
        what=f"{job.key} scheduled after now",
    )


async def after_due_jobs_ran(s: Scheduler, rec: Recorder) -> None:
    """Wait on a positive before asserting a negative: a witness job, due now and
    started after the jobs the clock just woke, has run, so each of them that was
    due would have run too (the loop runs ready tasks in order, and the witness
    takes one more step to its run than a woken job). Its call is then dropped."""
    witness = s.attach(Job("witness", print, Once(0), key="witness"))
    await async_wait_until(lambda: witness.state is JobState.DONE, what="the witness job")
    assert rec.calls[-1][0] == "witness"
    del rec.calls[-1]


async def test_a_daily_job_runs_when_the_clock_reaches_it(
    clock: FakeClock, sched: tuple[Scheduler, Recorder]
) -> None:
    s, rec = sched
    job = s.attach(Job("standup", lambda: None, DailyAt("09:30", days="mon-fri")))
    await until_waiting(clock, job)
    assert job.next_run == utc(2026, 1, 5, 9, 30)
    clock.advance(minutes=89)
    await until_waiting(clock, job)
    assert rec.calls == []
    clock.advance(minutes=1)
    await async_wait_until(lambda: len(rec.calls) == 1)
    assert rec.calls[0][2] == utc(2026, 1, 5, 9, 30)
    await until_waiting(clock, job)
    assert job.next_run == utc(2026, 1, 6, 9, 30)
    assert job.runs == 1


async def test_every_on_the_fake_clock(clock: FakeClock, sched: tuple[Scheduler, Recorder]) -> None:
    s, rec = sched
    job = s.attach(Job("tick", lambda: None, Every(60)))
    for n in range(1, 4):
        await until_waiting(clock, job)
        clock.advance(seconds=60)
        await async_wait_until(lambda n=n: len(rec.calls) == n)
    assert [c[2] for c in rec.calls] == [MONDAY_8 + timedelta(minutes=m) for m in (1, 2, 3)]


async def test_later_runs_once_with_its_arguments(
    clock: FakeClock, sched: tuple[Scheduler, Recorder]
) -> None:
    s, rec = sched
    job = s.attach(Job("remind", print, Once(timedelta(minutes=10)), args=("alice",), key="r-a"))
    assert s.jobs["r-a"] is job
    await until_waiting(clock, job)
    clock.advance(minutes=10)
    await async_wait_until(lambda: job.state is JobState.DONE)
    assert rec.calls == [("r-a", ("alice",), MONDAY_8 + timedelta(minutes=10))]
    assert "r-a" not in s.jobs  # a finished one-shot leaves bot.jobs
    assert clock.next_wakeup is None


async def test_cancel_before_it_runs(clock: FakeClock, sched: tuple[Scheduler, Recorder]) -> None:
    s, rec = sched
    job = s.attach(Job("remind", print, Once(600), key="r"))
    await until_waiting(clock, job)
    assert job.cancel() is True
    assert job.cancel() is False
    assert job.state is JobState.CANCELLED
    assert "r" not in s.jobs
    clock.advance(minutes=20)
    await after_due_jobs_ran(s, rec)
    assert rec.calls == []
    with pytest.raises(UsageError, match="cancelled"):
        job.start()


async def test_later_with_the_same_key_replaces_the_pending_one(
    clock: FakeClock, sched: tuple[Scheduler, Recorder]
) -> None:
    s, rec = sched
    first = s.attach(Job("remind", print, Once(60), args=(1,), key="k"))
    second = s.attach(Job("remind", print, Once(120), args=(2,), key="k"))
    assert first.state is JobState.CANCELLED
    assert s.jobs["k"] is second
    await until_waiting(clock, second)
    clock.advance(minutes=5)
    await async_wait_until(lambda: second.state is JobState.DONE)
    assert [c[1] for c in rec.calls] == [(2,)]


async def test_stop_start_and_run_now(clock: FakeClock, sched: tuple[Scheduler, Recorder]) -> None:
    s, rec = sched
    job = s.attach(Job("tick", lambda: None, Every(60)))
    await until_waiting(clock, job)
    job.stop()
    assert job.state is JobState.STOPPED and job.next_run is None
    clock.advance(minutes=5)
    await after_due_jobs_ran(s, rec)
    assert rec.calls == []
    await job.run_now()  # works while stopped; the schedule stays stopped
    assert len(rec.calls) == 1 and job.state is JobState.STOPPED
    job.start()
    await until_waiting(clock, job)
    assert job.next_run == clock.now() + timedelta(seconds=60)
    clock.advance(seconds=60)
    await async_wait_until(lambda: len(rec.calls) == 2)


async def test_run_now_of_a_later_job_is_its_one_run(
    clock: FakeClock, sched: tuple[Scheduler, Recorder]
) -> None:
    s, rec = sched
    job = s.attach(Job("remind", print, Once(600), key="r"))
    await until_waiting(clock, job)
    await job.run_now()
    assert job.state is JobState.DONE
    clock.advance(minutes=20)
    await after_due_jobs_ran(s, rec)
    assert len(rec.calls) == 1


async def test_runs_never_overlap(clock: FakeClock, sched: tuple[Scheduler, Recorder]) -> None:
    s, rec = sched
    rec.block = asyncio.Event()
    job = s.attach(Job("slow", lambda: None, Every(60)))
    await until_waiting(clock, job)
    clock.advance(seconds=60)
    await async_wait_until(lambda: job.state is JobState.RUNNING)
    manual = asyncio.create_task(job.run_now())
    clock.advance(seconds=600)  # overruns ten periods
    await after_due_jobs_ran(s, rec)
    assert len(rec.calls) == 1  # run_now waits for the running one
    rec.block.set()
    await manual
    await until_waiting(clock, job)
    assert len(rec.calls) == 2
    assert job.next_run is not None and job.next_run > clock.now()


async def test_a_gate_decides_which_replica_runs(clock: FakeClock) -> None:
    rec = Recorder(clock)
    asked: list[datetime] = []

    async def gate(job: Job, moment: datetime) -> bool:
        asked.append(moment)
        return len(asked) % 2 == 0

    s = Scheduler(clock, rec, gate=gate)
    job = s.attach(Job("tick", lambda: None, Every(60)))
    try:
        for n in range(1, 5):
            await until_waiting(clock, job)
            clock.advance(seconds=60)
            await async_wait_until(lambda n=n: len(asked) == n)
        await until_waiting(clock, job)
        assert len(rec.calls) == 2
        assert [c[2] for c in rec.calls] == [asked[1], asked[3]]
    finally:
        await s.close()


async def test_close_cancels_every_job(clock: FakeClock) -> None:
    rec = Recorder(clock)
    rec.block = asyncio.Event()
    jobs = Jobs()
    s = Scheduler(clock, rec, jobs=jobs)
    running = s.attach(Job("slow", lambda: None, Every(60, now=True)))
    pending = s.attach(Job("remind", print, Once(600), key="r"))
    await async_wait_until(lambda: running.state is JobState.RUNNING)
    await s.close()
    assert running.state is JobState.PENDING  # a periodic job starts again with the next run
    assert pending.state is JobState.CANCELLED
    assert "r" not in jobs
    with pytest.raises(UsageError, match="stopping"):
        s.attach(Job("late", print, Once(1)))
    with pytest.raises(UsageError, match="once the bot runs"):
        await running.run_now()


async def test_a_job_stopped_before_the_bot_runs_does_not_start(clock: FakeClock) -> None:
    rec = Recorder(clock)
    s = Scheduler(clock, rec)
    job = Job("tick", lambda: None, Every(60, now=True))
    job.stop()
    s.attach(job)
    try:
        await after_due_jobs_ran(s, rec)
        assert job.state is JobState.STOPPED and rec.calls == []
        job.start()
        await async_wait_until(lambda: len(rec.calls) == 1)
    finally:
        await s.close()


def test_fake_clock_moves_forward_only() -> None:
    c = FakeClock(MONDAY_8)
    assert c.advance(90) == MONDAY_8 + timedelta(seconds=90)
    assert c.advance(timedelta(hours=1)) == MONDAY_8 + timedelta(seconds=3690)
    with pytest.raises(ValueError):
        c.advance(-1)
    with pytest.raises(ValueError):
        c.set(MONDAY_8)


async def test_the_stepped_clock_follows_real_time_and_jumps() -> None:
    clock = SteppedClock()
    rec = Recorder(clock)
    s = Scheduler(clock, rec)
    fast = s.attach(Job("fast", lambda: None, Every(0.01)))
    daily = s.attach(Job("daily", lambda: None, Once(timedelta(hours=3)), key="d"))
    try:
        await async_wait_until(lambda: fast.runs >= 2, what="real-time runs")
        assert daily.runs == 0
        before = datetime.now(UTC)
        clock.advance(hours=3)
        await async_wait_until(lambda: daily.state is JobState.DONE, what="the jump")
        assert clock.now() - before >= timedelta(hours=3)
    finally:
        await s.close()


# -- on a running bot, through the harness -------------------------------

from concordctl import Bot, Context, HandlerError  # noqa: E402
from concordctl.testing import Harness  # noqa: E402


async def test_at_cron_later_and_run_job_on_a_live_bot(concord_harness: Harness) -> None:
    h = concord_harness
    bot = Bot(timeout=5)

    @bot.at("09:30", days="mon-fri", tz="Europe/Berlin")
    async def standup() -> None:
        await bot.client.send_chat("general", "standup time")

    @bot.cron("*/15 * * * *")
    def poll() -> None:
        raise RuntimeError("poll failed")  # logged; the bot goes on

    async def remind(who: str, text: str) -> None:
        await bot.client.send_chat("general", f"{who}: {text}")

    @bot.command("remind")
    async def remind_cmd(ctx: Context) -> None:
        bot.later(timedelta(minutes=10), remind, ctx.args[0], ctx.args[1], key="r-" + ctx.args[0])
        await ctx.reply("ok")

    await h.start_bot(bot, raise_handler_errors=False)  # poll fails on purpose
    assert bot.jobs["standup"] is standup.job  # type: ignore[attr-defined]
    await h.run_job(standup)
    await h.expect_reply(match="^standup time$")
    await h.run_job("poll")
    assert isinstance(poll.job.last_error, RuntimeError)  # type: ignore[attr-defined]
    await h.ask("!remind alice lunch", match="^ok$")
    job = bot.jobs["r-alice"]
    assert job.state is JobState.SCHEDULED
    assert job.next_run is not None and job.next_run > h.clock.now() + timedelta(minutes=9)
    h.advance(minutes=10)
    await h.expect_reply(match="^alice: lunch$")
    await async_wait_until(lambda: "r-alice" not in bot.jobs)


async def test_jobs_are_cancelled_at_shutdown(concord_harness: Harness) -> None:
    h = concord_harness
    bot = Bot()
    ran: list[str] = []

    @bot.every(seconds=3600)
    async def hourly() -> None:
        ran.append("hourly")

    await h.start_bot(bot)
    pending = bot.later(600, ran.append, "later", key="x")
    assert pending.state is JobState.SCHEDULED
    await h.stop_bot(bot)
    assert pending.state is JobState.CANCELLED
    assert hourly.job.state is JobState.PENDING  # type: ignore[attr-defined]
    assert ran == []


async def test_a_swapped_in_bot_schedules_its_own_jobs(concord_harness: Harness) -> None:
    h = concord_harness
    old, new = Bot(), Bot()
    ran: list[str] = []

    @old.every(seconds=60)
    async def tick() -> None:
        ran.append("old tick")

    @new.every(seconds=60)  # the edited code
    async def tick2() -> None:
        ran.append("new tick")

    await h.start_bot(old)
    await old.swap(new)
    assert old.jobs["tick"].state is JobState.PENDING  # the old job no longer runs
    pending = new.later(30, ran.append, "later")
    assert pending.state is JobState.SCHEDULED  # later() after the swap reaches the scheduler
    # advance once both have read the clock (their tasks have just been made)
    await async_wait_until(lambda: None not in (pending.next_run, new.jobs["tick2"].next_run))
    h.advance(seconds=60)
    await async_wait_until(lambda: sorted(ran) == ["later", "new tick"])
    assert new.jobs["tick2"].runs == 1


async def test_a_failing_later_job_reaches_the_error_hook(concord_harness: Harness) -> None:
    h = concord_harness
    bot = Bot()
    errors: list[HandlerError] = []

    @bot.on_error
    async def report(err: HandlerError) -> None:
        errors.append(err)

    def explode(what: str) -> None:
        raise RuntimeError(what)

    await h.start_bot(bot, raise_handler_errors=False)
    job = bot.later(60, explode, "boom", key="x")
    await async_wait_until(lambda: job.next_run is not None)
    h.advance(seconds=60)
    await async_wait_until(lambda: errors)
    assert errors[0].handler.endswith("explode") and isinstance(errors[0].exception, RuntimeError)
    assert isinstance(job.last_error, RuntimeError)
