"""Bots: decorators that route Concord events to handlers (the loop is ``dispatch.py``).

::

    bot = Bot(prefix="!")

    @bot.on("chat_sent", channel="general", match=r"deploy (\\S+)")
    async def deploys(event: ChatSent, match: re.Match[str]) -> None: ...

    @bot.command("ping")
    async def ping(ctx: Context) -> None:
        await ctx.reply("pong")

    bot.run()

How events are dispatched (the promises handlers can rely on):

* Every event goes to every handler whose type and filters match it, in the
  order the handlers were registered.
* **Ordering.** Each handler has one *lane* per channel (events without a
  channel share one lane): a handler sees the events of one channel one at a
  time, in stream order. Lanes of different handlers or channels run
  concurrently, so a slow handler delays only its own lane.
* **Bounded concurrency.** At most ``concurrency`` lanes (default 64) run
  handler code at once; more wait for a slot. At most ``max_backlog`` events
  (default 10,000) wait in lanes; beyond that the bot stops reading the stream
  until handlers catch up (backpressure instead of unbounded memory).
* **Isolation.** A handler that raises is logged with its traceback and the
  event (and appended to the dead-letter file, if any); a handler that runs
  past its ``timeout`` (default 60 s, checked a few times per timeout) is
  cancelled and logged. Either way the bot and the other handlers go on.
* Plain ``def`` handlers run in a worker thread (one pool of ``concurrency``
  threads) so they cannot block the event loop; they get a
  :class:`SyncContext` whose ``reply`` etc. block. A thread cannot be killed:
  after a timeout the bot stops waiting for it and moves on.
* An ``async def`` handler with no ``await`` at all cannot suspend, so it
  runs inline as its event arrives, without a lane or a task (errors are
  handled the same way); a counter or a log line costs about a function call.
  Other lanes are drained by one task per burst, not one task per event.

Operations: a watchdog reopens a stream that has been silent for
``watchdog`` seconds (recovering missed chats from the last chat id seen);
``health_file`` is touched every second while the bot is connected and not
stalled; ``dead_letters`` collects events whose handler failed, as NDJSON that
``concordctl run --replay`` feeds back; sends are rate limited (``send_rate``
per second, ``send_burst`` at once) and a handler answering the bot's own
chats in a loop is stopped (:class:`SendLoopError`) with a clear warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import difflib
import dis
import inspect
import json
import logging
import os
import re
import shlex
import signal
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from concordctl.bot.schedule import (
    Clock,
    CronSchedule,
    DailyAt,
    Every,
    Job,
    Jobs,
    Once,
    Schedule,
    SystemClock,
)
from concordctl.bot.store import INTERNAL_PREFIX, StateHandle, Store
from concordctl.errors import ConcordError, UsageError
from concordctl.protocol import (
    EVENT_CLASSES,
    EVENT_TYPES,
    Chat,
    ChatSent,
    Event,
    UnknownEvent,
)

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.bot.dispatch import Runtime
    from concordctl.client import Client

__all__ = ["Bot", "Context", "EventSource", "SendLoopError", "SyncContext"]

log = logging.getLogger("concordctl.bot")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

#: Where a bot's events come from: an async iterable (tests, replays), or a
#: factory called with the last chat id seen, so the bot can reopen the stream
#: (the watchdog does) and recover what it missed.
EventSource = AsyncIterable[Event] | Callable[[int | None], AsyncIterator[Event]]

#: Called for each write in dry-run mode instead of doing it: (action, details).
WriteHook = Callable[[str, dict[str, Any]], None]

_ANY: Any = object()  # "no thread filter" (None means "not in a thread")
_CONTENT_TYPES = frozenset(("chat_sent", "chat_edited"))
_AUTHOR_TYPES = frozenset(
    ("chat_sent", "chat_typing", "user_joined", "user_left", "user_status_updated")
)
_CHANNEL_TYPES = frozenset(
    (
        "chat_sent",
        "chat_edited",
        "chat_deleted",
        "chat_reactions_updated",
        "chat_typing",
        "channel_created",
        "channel_deleted",
        "channels_updated",
    )
)
_THREAD_TYPES = frozenset(
    ("chat_sent", "chat_edited", "chat_deleted", "chat_reactions_updated", "chat_typing")
)
_DEAD_LETTER_KEY = "concordctlDeadLetter"

# Set by `concordctl run` while it imports a bot file, so that a module-level
# `bot.run()` does not start a second bot.
_loading: contextvars.ContextVar[bool] = contextvars.ContextVar("concordctl_loading", default=False)


class SendLoopError(ConcordError):
    """A handler kept answering the bot's own chats: the send was refused."""


# --------------------------------------------------------------------------
# Handler contexts
# --------------------------------------------------------------------------


class Context:
    """What a command handler gets: the chat, its arguments, and ways to answer.

    ``"!deploy web 'blue green'"`` gives ``command == "deploy"``,
    ``args == ["web", "blue green"]`` and ``text == "web 'blue green'"``.
    """

    __slots__ = ("args", "bot", "command", "event", "match", "prefix", "text")

    def __init__(
        self,
        bot: Bot,
        event: ChatSent,
        command: str,
        args: list[str],
        text: str,
        prefix: str,
        match: re.Match[str] | None = None,
    ) -> None:
        self.bot = bot
        self.event = event
        self.command = command
        self.args = args
        self.text = text
        self.prefix = prefix
        self.match = match

    @property
    def chat(self) -> Chat:
        return self.event.chat

    @property
    def recovered(self) -> bool:
        """True for a chat recovered after a reconnect (it may be old news)."""
        return self.event.recovered

    @property
    def client(self) -> Client:
        return self.bot.client

    async def reply(self, text: str) -> Chat:
        """Send ``text`` to the chat's channel (and thread)."""
        chat = self.event.chat
        return await self.bot.client.send_chat(chat.channel_id, text, thread_id=chat.thread_id)

    async def react(self, reaction: str) -> None:
        """Add a reaction to the chat."""
        await self.bot.client.react(self.event.chat.id, reaction)

    async def typing(self) -> None:
        """Show "typing" in the chat's channel."""
        chat = self.event.chat
        await self.bot.client.typing(chat.channel_id, thread_id=chat.thread_id)

    def __repr__(self) -> str:
        return f"Context(command={self.command!r}, args={self.args!r}, chat_id={self.chat.id})"


class SyncContext:
    """The context of a plain ``def`` command handler: the same, but blocking.

    It runs in a worker thread; ``run(coro)`` runs any client coroutine on the
    bot's loop and waits for it, e.g. ``ctx.run(ctx.client.users())``.
    """

    __slots__ = ("_ctx", "_loop")

    def __init__(self, ctx: Context, loop: asyncio.AbstractEventLoop) -> None:
        self._ctx = ctx
        self._loop = loop

    bot = property(lambda self: self._ctx.bot)
    event = property(lambda self: self._ctx.event)
    chat = property(lambda self: self._ctx.chat)
    command = property(lambda self: self._ctx.command)
    args = property(lambda self: self._ctx.args)
    text = property(lambda self: self._ctx.text)
    prefix = property(lambda self: self._ctx.prefix)
    match = property(lambda self: self._ctx.match)
    recovered = property(lambda self: self._ctx.recovered)
    client = property(lambda self: self._ctx.client)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def reply(self, text: str) -> Chat:
        return self.run(self._ctx.reply(text))

    def react(self, reaction: str) -> None:
        self.run(self._ctx.react(reaction))

    def typing(self) -> None:
        self.run(self._ctx.typing())

    def __repr__(self) -> str:
        return "Sync" + repr(self._ctx)


# --------------------------------------------------------------------------
# The registry: what handlers exist and what they accept
# --------------------------------------------------------------------------


@dataclass(eq=False)
class _Lane:
    """One handler's queue for one channel: events handled one at a time, in order."""

    listener: _Listener
    key: int | None
    items: deque[tuple[Event, Any, bool]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    current: Event | None = None
    started: float = 0.0
    cancelling: Event | None = None  # the event the timeout cancelled


@dataclass(eq=False)
class _Listener:
    """A registered handler and its filters (``on`` and ``command`` alike)."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    order: int
    types: frozenset[str] | None  # None: every type ("*")
    unknown_only: bool = False
    channel_ref: int | str | None = None
    author_ref: int | str | None = None
    pattern: re.Pattern[str] | None = None
    thread: Any = _ANY
    include_self: bool | None = None  # None: the bot's setting
    recovered: bool = True
    timeout: float | None = None
    pass_match: bool = False
    command: tuple[str, ...] = ()  # names, for commands
    doc: str = ""
    # resolved at start
    channel_id: int | None = None
    author_id: int | None = None
    lanes: dict[int | None, _Lane] = field(default_factory=dict)
    # derived once here, read on every event
    filtered: bool = False
    inline: bool = False

    def __post_init__(self) -> None:
        self.filtered = (
            self.channel_ref is not None
            or self.author_ref is not None
            or self.pattern is not None
            or self.thread is not _ANY
            or not self.recovered
        )
        self.inline = self.is_async and not self.command and _never_suspends(self.fn)


@dataclass(eq=False)
class _Periodic:
    name: str
    fn: Callable[[], Any]
    is_async: bool
    seconds: float
    now: bool


@dataclass(eq=False)
class _Hook:
    name: str
    fn: Callable[[], Any]
    is_async: bool


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


# Opcodes through which a coroutine can suspend (await, async for, async with).
_SUSPENDING_OPS = frozenset(
    ("GET_AWAITABLE", "SEND", "YIELD_VALUE", "GET_AITER", "GET_ANEXT", "BEFORE_ASYNC_WITH")
)


def _never_suspends(fn: Callable[..., Any]) -> bool:
    """True for an ``async def`` whose body has no await at all.

    Such a handler cannot suspend, so the bot runs it inline when its event
    arrives instead of through a lane task: a counter or a log line then costs
    about a function call. Nothing else about it differs (errors are caught and
    logged the same way; it cannot be cancelled, but neither could it be in a
    task, since it never yields).
    """
    code = getattr(fn, "__code__", None)
    if code is None or not inspect.iscoroutinefunction(fn):
        return False
    return not any(ins.opname in _SUSPENDING_OPS for ins in dis.get_instructions(code))


def _positional_count(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 2
    return sum(1 for p in params if p.kind in kinds)


def _name_of(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or fn)


def _valid_types_text() -> str:
    return ", ".join(sorted(EVENT_TYPES)) + ', or "*" for every event'


def _event_types(event_type: str | type[Any]) -> tuple[frozenset[str] | None, bool]:
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


def _check_filter(types: frozenset[str] | None, allowed: frozenset[str], what: str) -> None:
    if types is None:  # "*": the filter applies to the events that have the field
        return
    missing = sorted(types - allowed)
    if missing:
        raise UsageError(
            f"{what} cannot filter {', '.join(missing)} events (they have no such field)",
            hint=f"{what} applies to {', '.join(sorted(allowed))}",
        )


def describe(ev: Event) -> str:
    """One line about an event for logs: type, ids, and the start of the content."""
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


def parse_command(content: str, prefix: str) -> tuple[str, list[str], str] | None:
    """``"!deploy web 'a b'"`` -> ``("deploy", ["web", "a b"], "web 'a b'")``.

    Quoting is shell-like (``shlex``); text with an unbalanced quote falls back
    to splitting on whitespace rather than being dropped. None when the content
    is not a command (no prefix, or nothing after it).
    """
    if not content.startswith(prefix):
        return None
    body = content[len(prefix) :]
    if not body or body[0].isspace():
        return None
    first_ws = re.search(r"\s", body)
    if first_ws is not None:
        head, rest = body[: first_ws.start()], body[first_ws.end() :]
    else:
        head, rest = body, ""
    rest = rest.strip()
    try:
        args = shlex.split(rest)
    except ValueError:  # unbalanced quotes: take the words as they are
        args = rest.split()
    return head.lower(), args, rest


# --------------------------------------------------------------------------
# The bot
# --------------------------------------------------------------------------


class Bot:
    """A bot: handlers registered with decorators, run against a Concord server.

    Arguments (all optional):

    * ``prefix``: what starts a command (``"!"``).
    * ``concurrency``: handler calls running at once (64); see the module doc.
    * ``timeout``: seconds a handler may run before it is cancelled (60; None: no limit).
    * ``grace``: seconds running handlers get to finish at shutdown (10).
    * ``ignore_self``: skip chats the bot wrote itself (True); per handler ``include_self=True``.
    * ``unknown_command``: ``"ignore"`` or ``"reply"`` (answers with a pointer to help).
    * ``help_command``: provide ``!help`` listing commands and their docstrings (True).
    * ``send_rate`` / ``send_burst``: writes per second and burst (5, 10).
    * ``loop_limit``: writes allowed within 10 s while handling the bot's own chats (5).
    * ``watchdog``: seconds of silence after which the stream is reopened (300; None: off).
    * ``health_file``: path touched every second while connected and not stalled.
    * ``dead_letters``: NDJSON file where events whose handler failed are appended.
    * ``max_backlog``: events waiting in lanes before the stream is paused (10,000).
    """

    def __init__(
        self,
        prefix: str = "!",
        *,
        concurrency: int = 64,
        timeout: float | None = 60.0,
        grace: float = 10.0,
        ignore_self: bool = True,
        unknown_command: Literal["ignore", "reply"] = "ignore",
        help_command: bool = True,
        send_rate: float = 5.0,
        send_burst: int = 10,
        loop_limit: int = 5,
        watchdog: float | None = 300.0,
        health_file: str | os.PathLike[str] | None = None,
        dead_letters: str | os.PathLike[str] | None = None,
        max_backlog: int = 10_000,
        state: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if concurrency < 1:
            raise UsageError("concurrency must be at least 1")
        if unknown_command not in ("ignore", "reply"):
            raise UsageError("unknown_command must be 'ignore' or 'reply'")
        self.prefix = prefix
        self.concurrency = concurrency
        self.timeout = timeout
        self.grace = grace
        self.ignore_self = ignore_self
        self.unknown_command = unknown_command
        self.help_command = help_command
        self.send_rate = send_rate
        self.send_burst = send_burst
        self.loop_limit = loop_limit
        self.watchdog = watchdog
        self.health_file = health_file
        self.dead_letters = dead_letters
        self.max_backlog = max(1, max_backlog)

        self._listeners: list[_Listener] = []
        self._commands: dict[str, _Listener] = {}
        self._periodic: list[_Periodic] = []
        self._on_ready: list[_Hook] = []
        self._on_shutdown: list[_Hook] = []
        self._routes: dict[str, tuple[_Listener, ...]] = {}
        self._unknown_route: tuple[_Listener, ...] | None = None
        # chat_sent is most of the traffic: its route, and when every handler
        # on it is a plain await-free one, just their functions (the fast path).
        self._chat_route: tuple[_Listener, ...] | None = None
        self._chat_fast: tuple[Callable[..., Any], ...] | None = None
        self._order = 0
        self._help = _Listener(
            name="help",
            fn=self._builtin_help,
            is_async=True,
            order=-1,
            types=frozenset(("chat_sent",)),
            command=("help",),
            doc="List the commands, or explain one: help [COMMAND].",
        )
        self._runtime: Runtime | None = None
        self._stop_early = False
        #: The clock schedules run on (the harness steps its own).
        self.clock: Clock = clock or SystemClock()
        #: Scheduled jobs by key: periodic handlers by name, ``later`` jobs by key.
        self.jobs = Jobs()
        self._scheduled: list[Job] = []
        self._later: list[Job] = []  # later() before the bot runs
        self.state = state

    # -- state and schedules (issue 10; see store.py, schedule.py, claims.py) --

    @property
    def state(self) -> str | None:
        """Where the store and the stream cursor live (None: in memory)."""
        return self._state.spec

    @state.setter
    def state(self, value: str | os.PathLike[str] | None) -> None:
        if self._runtime is not None and not self._runtime.finished:
            raise UsageError("state= cannot change while the bot runs")
        self._state = StateHandle(os.fspath(value) if value is not None else None)

    @property
    def durable(self) -> bool:
        """True when the state outlives the process (a file or PostgreSQL)."""
        return self._state.spec not in (None, ":memory:")

    def store(self, namespace: str) -> Store:
        """A namespace of the bot's state: ``get``, ``set``, ``delete``, ``update``, ``items``."""
        if isinstance(namespace, str) and namespace.startswith(INTERNAL_PREFIX):
            raise UsageError(
                f"store namespaces starting with {INTERNAL_PREFIX!r} are the bot's own"
            )
        return Store(lambda: self._state, namespace)  # follows a later bot.state = ...

    def at(
        self,
        times: str | Iterable[str],
        *,
        days: str | Iterable[str] | None = None,
        tz: str | None = None,
    ) -> Callable[[F], F]:
        """Run a function at wall-clock times (``"09:30"``) on ``days`` in time zone ``tz``."""
        return self._schedule(DailyAt(times, days=days, tz=tz))

    def cron(self, expr: str, *, tz: str | None = None) -> Callable[[F], F]:
        """Run a function on a cron schedule (``"30 9 * * 1-5"``), in ``tz`` (UTC)."""
        return self._schedule(CronSchedule(expr, tz=tz))

    def _schedule(self, schedule: Schedule) -> Callable[[F], F]:
        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"a schedule needs a function, got {fn!r}")
            key = str(getattr(fn, "__name__", None) or _name_of(fn))
            job = Job(_name_of(fn), fn, schedule, key=key, is_async=_is_async(fn))
            if job.key in self.jobs:
                raise UsageError(f"a job named {job.key!r} is already scheduled")
            self._scheduled.append(job)
            self.jobs.add(job)
            # A bound method or builtin cannot carry it: bot.jobs[name] still works.
            with contextlib.suppress(AttributeError):
                fn.job = job  # type: ignore[attr-defined]
            return fn

        return register

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
        job = Job(_name_of(fn), fn, Once(delay), args=args, key=key, is_async=_is_async(fn))
        rt = self._runtime
        if rt is not None and not rt.finished and rt.scheduler is not None:
            rt.scheduler.attach(job)
        else:
            old = self.jobs.get(job.key)
            if old is not None and old.one_shot:
                old.cancel()
                if old in self._later:
                    self._later.remove(old)
            self._later.append(job)
            self.jobs.add(job)
        return job

    # -- registration ----------------------------------------------------

    def on(
        self,
        event_type: str | type[Any],
        *,
        channel: int | str | None = None,
        author: int | str | None = None,
        match: str | re.Pattern[str] | None = None,
        thread: int | None = _ANY,
        include_self: bool | None = None,
        recovered: bool = True,
        timeout: float | None = None,
    ) -> Callable[[F], F]:
        """Register a handler for events of a type (a wire name, an event class, or "*").

        Filters: ``channel`` (id or name), ``author`` (id or username),
        ``match`` (regular expression searched in the content; a handler with
        two parameters gets the match object as the second), ``thread`` (an id,
        or None for "not in a thread"), ``recovered=False`` to skip chats
        recovered after a reconnect. An unknown type name, or a filter the
        type cannot have, is an error here rather than a handler that never runs.
        """
        types, unknown_only = _event_types(event_type)
        pattern = self._compile(match)
        if channel is not None:
            _check_filter(types, _CHANNEL_TYPES, "channel=")
        if author is not None:
            _check_filter(types, _AUTHOR_TYPES, "author=")
        if pattern is not None:
            _check_filter(types, _CONTENT_TYPES, "match=")
        if thread is not _ANY:
            _check_filter(types, _THREAD_TYPES, "thread=")

        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"@bot.on needs a function, got {fn!r}")
            listener = _Listener(
                name=_name_of(fn),
                fn=fn,
                is_async=_is_async(fn),
                order=self._next_order(),
                types=types,
                unknown_only=unknown_only,
                channel_ref=_ref(channel),
                author_ref=_ref(author),
                pattern=pattern,
                thread=thread,
                include_self=include_self,
                recovered=recovered,
                timeout=timeout,
                pass_match=_positional_count(fn) >= 2,
            )
            self._listeners.append(listener)
            self._routes.clear()
            self._unknown_route = None
            self._chat_route = None
            self._chat_fast = None
            return fn

        return register

    def command(
        self,
        name: str | None = None,
        *,
        aliases: Iterable[str] = (),
        channel: int | str | None = None,
        author: int | str | None = None,
        match: str | re.Pattern[str] | None = None,
        thread: int | None = _ANY,
        include_self: bool | None = None,
        recovered: bool = True,
        timeout: float | None = None,
        help: str | None = None,
    ) -> Callable[[F], F]:
        """Register a command: ``!name args...`` calls the handler with a :class:`Context`.

        The name defaults to the function's; names are case-insensitive. The
        docstring (or ``help=``) is what ``!help`` shows.
        """
        pattern = self._compile(match)
        if isinstance(aliases, str):
            aliases = (aliases,)

        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"@bot.command needs a function, got {fn!r}")
            names = tuple(n.lower() for n in (name or getattr(fn, "__name__", ""), *aliases))
            for n in names:
                if not n or any(ch.isspace() for ch in n):
                    raise UsageError(f"invalid command name {n!r}")
                if n in self._commands:
                    raise UsageError(
                        f"command {n!r} is already registered by {self._commands[n].name}"
                    )
            listener = _Listener(
                name=_name_of(fn),
                fn=fn,
                is_async=_is_async(fn),
                order=self._next_order(),
                types=frozenset(("chat_sent",)),
                channel_ref=_ref(channel),
                author_ref=_ref(author),
                pattern=pattern,
                thread=thread,
                include_self=include_self,
                recovered=recovered,
                timeout=timeout,
                command=names,
                doc=inspect.cleandoc(help or fn.__doc__ or ""),
            )
            for n in names:
                self._commands[n] = listener
            return fn

        return register

    def every(self, seconds: float, *, now: bool = False) -> Callable[[F], F]:
        """Run a function every ``seconds`` while the bot runs (first after one
        period, or at once with ``now=True``). A run that overruns delays the
        next one; runs never overlap."""
        return self._schedule(Every(seconds, now=now))

    def on_ready(self, fn: F) -> F:
        """Run once the bot is connected and listening (again after a --reload)."""
        self._on_ready.append(_Hook(_name_of(fn), fn, _is_async(fn)))
        return fn

    def on_shutdown(self, fn: F) -> F:
        """Run at shutdown, after running handlers finished or the grace period ended."""
        self._on_shutdown.append(_Hook(_name_of(fn), fn, _is_async(fn)))
        return fn

    @property
    def commands(self) -> dict[str, Callable[..., Any]]:
        """Command names and aliases to their handlers (built-in help included)."""
        found = {n: lst.fn for n, lst in self._commands.items()}
        if self.help_command and "help" not in found:
            found["help"] = self._help.fn
        return found

    def _next_order(self) -> int:
        self._order += 1
        return self._order

    @staticmethod
    def _compile(match: str | re.Pattern[str] | None) -> re.Pattern[str] | None:
        if match is None or isinstance(match, re.Pattern):
            return match
        try:
            return re.compile(match)
        except re.error as exc:
            raise UsageError(f"invalid match= regular expression {match!r}: {exc}") from None

    # -- running ---------------------------------------------------------

    @property
    def client(self) -> Client:
        """The bot's connected Client (writes through it are rate limited)."""
        rt = self._runtime
        if rt is None or rt.client is None:
            raise UsageError("bot.client is available once the bot runs (in on_ready and handlers)")
        return cast("Client", rt.client)

    @property
    def user_id(self) -> int | None:
        """The bot's own user id once running (None offline)."""
        return self._runtime.self_id if self._runtime else None

    @property
    def running(self) -> bool:
        return self._runtime is not None and not self._runtime.finished

    async def wait_ready(self) -> None:
        """Wait until the bot is connected and its on_ready hooks have run.

        Use ``async with asyncio.timeout(...)`` around it to bound the wait."""
        for _ in range(1000):
            if self._runtime is not None:
                break
            await asyncio.sleep(0.01)
        if self._runtime is None:
            raise UsageError("the bot is not running")
        await self._runtime.ready.wait()

    def stop(self) -> None:
        """Ask the bot to stop: no new events, running handlers get ``grace`` seconds."""
        if self._runtime is None:
            self._stop_early = True
        else:
            self._runtime.request_stop()

    async def serve(
        self,
        client: Client | None = None,
        *,
        events: EventSource | None = None,
        dry_run: WriteHook | None = None,
        **client_options: Any,
    ) -> None:
        """Run until stopped (or until a finite ``events`` source ends).

        ``client``: an entered Client to use (the caller closes it); without
        one, a Client is made from ``client_options`` (``server``,
        ``username``, ``password``, ``token``, ``profile``... as for
        ``Client()``; none resolves settings like the command line) and closed
        at the end. ``events``: where events come from instead of
        ``client.events()``, an async iterable or a factory (see
        :data:`EventSource`). ``dry_run``: called with each write instead of
        doing it.
        """
        if self._runtime is not None and not self._runtime.finished:
            raise UsageError("this bot is already running")
        if client is None and (events is None or client_options):
            from concordctl.client import Client as _Client

            async with _Client(**client_options) as own:
                await self._serve(own, events, dry_run)
        else:
            await self._serve(client, events, dry_run)

    async def _serve(
        self, client: Any, events: EventSource | None, dry_run: WriteHook | None
    ) -> None:
        from concordctl.bot.dispatch import Runtime

        rt = Runtime(self, client, dry_run)
        self._runtime = rt
        if self._stop_early:
            self._stop_early = False
            rt.request_stop()
        await rt.main(events)

    async def replay(
        self,
        lines: Iterable[str | bytes],
        *,
        client: Client | None = None,
        dry_run: WriteHook | None = None,
    ) -> int:
        """Feed recorded events (NDJSON lines as printed by ``concordctl tail
        --json``, or a dead-letter file) through the handlers, then return.

        A dead-letter line goes only to the handler that failed on it. Returns
        the number of events fed; undecodable lines are logged and skipped.
        """
        from concordctl.protocol import FrameError, decode_event

        items: list[Event | _Targeted] = []
        for number, raw in enumerate(lines, 1):
            text = raw.decode() if isinstance(raw, bytes) else raw
            if not text.strip():
                continue
            try:
                ev = decode_event(text)
                target = None
                obj = json.loads(text)
                if isinstance(obj, dict) and isinstance(obj.get(_DEAD_LETTER_KEY), dict):
                    target = obj[_DEAD_LETTER_KEY].get("handler")
            except (FrameError, ValueError) as exc:
                log.warning("replay: line %d skipped: %s", number, exc)
                continue
            items.append(_Targeted(ev, target) if isinstance(target, str) else ev)

        async def source() -> AsyncIterator[Any]:
            for item in items:
                yield item

        await self.serve(client, events=source(), dry_run=dry_run)
        return len(items)

    def run(self, **client_options: Any) -> None:
        """Run the bot until SIGINT/SIGTERM, for ``if __name__ == "__main__":``.

        Settings come from ``client_options`` (see :meth:`serve`), else from
        the environment and profile like the command line. Exits 0 after a
        clean stop, 130 on a second Ctrl-C, or the error's exit code (one line
        on stderr) when the bot cannot start.
        """
        if _loading.get():
            return  # imported by `concordctl run`, which runs the bot itself
        if not logging.getLogger().handlers:
            logging.basicConfig(
                level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
            )
        try:
            run_with_signals(self, lambda: self.serve(**client_options))
        except ConcordError as exc:
            log.error("%s", exc)
            raise SystemExit(exc.exit_code) from None

    async def swap(self, new: Bot) -> None:
        """Hand this bot's running connection to ``new`` (used by ``--reload``).

        New events go to ``new``'s handlers; handlers already running finish
        on the old code. ``new``'s on_ready hooks run and its periodic tasks
        replace the old ones.
        """
        rt = self._runtime
        if rt is None or rt.finished:
            raise UsageError("swap() needs a running bot")
        await rt.adopt(new)

    # -- dispatch (routes are cached per type) ---------------------------

    def _route(self, etype: str) -> tuple[_Listener, ...]:
        route = self._routes.get(etype)
        if route is None:
            route = tuple(
                lst
                for lst in self._listeners
                if (lst.types is None or etype in lst.types) and not lst.unknown_only
            )
            self._routes[etype] = route
        return route

    def _route_chat(self) -> tuple[_Listener, ...]:
        route = self._route("chat_sent")
        self._chat_route = route
        simple = all(lst.inline and not lst.filtered and not lst.pass_match for lst in route)
        self._chat_fast = tuple(lst.fn for lst in route) if simple else None
        return route

    def _listener_of(self, fn: Callable[..., Any]) -> _Listener:
        return next(lst for lst in self._listeners if lst.fn is fn)

    def _route_unknown(self) -> tuple[_Listener, ...]:
        if self._unknown_route is None:
            self._unknown_route = tuple(
                lst for lst in self._listeners if lst.types is None or lst.unknown_only
            )
        return self._unknown_route

    def _all_listeners(self) -> list[_Listener]:
        seen: dict[int, _Listener] = {}
        for lst in [*self._listeners, *self._commands.values()]:
            seen[id(lst)] = lst
        return list(seen.values())

    async def _builtin_help(self, ctx: Context) -> None:
        p = self.prefix
        if ctx.args:
            wanted = ctx.args[0].lower().removeprefix(p)
            lst = self._commands.get(wanted)
            if lst is None and wanted == "help":
                lst = self._help
            if lst is None:
                await ctx.reply(f"no command {p}{wanted}; try {p}help")
                return
            names = " | ".join(p + n for n in lst.command)
            await ctx.reply(f"{names}\n{lst.doc or '(no description)'}")
            return
        lines = ["Commands:"]
        shown: set[int] = set()
        entries = [*self._commands.values()]
        if "help" not in self._commands:
            entries.append(self._help)
        for lst in entries:
            if id(lst) in shown:
                continue
            shown.add(id(lst))
            first = lst.doc.splitlines()[0] if lst.doc else ""
            alias = (
                f" (also {', '.join(p + a for a in lst.command[1:])})" if lst.command[1:] else ""
            )
            lines.append(f"{p}{lst.command[0]}{alias}" + (f" — {first}" if first else ""))
        await ctx.reply("\n".join(lines))


def _ref(value: int | str | None) -> int | str | None:
    """A channel/user reference: ids stay ints, "123" becomes 123, names stay names."""
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        return text
    return value


@dataclass(frozen=True, slots=True)
class _Targeted:
    """A replayed dead letter: the event, for one handler only."""

    event: Event
    handler: str


def run_with_signals(bot: Bot, main: Callable[[], Awaitable[None]]) -> None:
    """Run ``main()`` in a new event loop; SIGINT/SIGTERM stop ``bot`` gracefully.

    A second signal exits at once with status 130 (a hung handler cannot
    keep the process alive).
    """

    async def wrapper() -> None:
        loop = asyncio.get_running_loop()
        received: list[str] = []

        def on_signal(name: str) -> None:
            if received:
                log.warning("%s again: exiting now", name)
                logging.shutdown()
                os._exit(130)
            received.append(name)
            log.info("%s received: stopping (again to exit at once)", name)
            bot.stop()

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal, sig.name)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass
        try:
            await main()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    asyncio.run(wrapper())
