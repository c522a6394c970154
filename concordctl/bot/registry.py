"""The registry: ``Router`` and ``Bot`` and their decorators, building a route table.

Decorators record :class:`~concordctl.bot.routes.Route` s; a signature that
cannot be bound, a misspelt event type or a filter the type cannot have is
an error here, when the file loads. ``Bot.serve`` freezes the records into a
:class:`~concordctl.bot.routes.RouteTable` and hands it to a
:class:`~concordctl.bot.runtime.Runtime`, which never sees the ``Bot``.
"""

# A wait's timeout is part of its API (`wait_for(..., timeout=30)`), as in discord.py.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Iterable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from concordctl.bot.calls import Observer
from concordctl.bot.commands import CommandSignature
from concordctl.bot.context import Context, SyncContext
from concordctl.bot.dispatch import Targeted
from concordctl.bot.events import ANY, check_filter, event_types
from concordctl.bot.feed import CursorStore, EventSource
from concordctl.bot.help import HELP_DOC, builtin_help
from concordctl.bot.policy import Check, Cooldown, checks_of, refs_of
from concordctl.bot.routes import (
    DEAD_LETTER_KEY,
    Kind,
    Options,
    Route,
    RouteTable,
    is_async,
    name_of,
)
from concordctl.bot.runtime import Runtime
from concordctl.bot.schedule import Clock, CronSchedule, DailyAt, Every, Job, Schedule
from concordctl.bot.signals import run_with_signals
from concordctl.bot.state import BotState, StateMixin
from concordctl.bot.writes import WriteHook
from concordctl.errors import ConcordError, UsageError
from concordctl.protocol import (
    AUTHOR_TYPES,
    CHANNEL_TYPES,
    CONTENT_TYPES,
    THREAD_TYPES,
    Event,
    event_author_id,
    event_channel_id,
    event_content,
)

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.client import Client

__all__ = ["Bot", "Router", "loading"]

log = logging.getLogger("concordctl.bot")

F = TypeVar("F", bound=Callable[..., Any])

# Set by `concordctl run` while it imports a bot file, so that a module-level
# `bot.run()` does not start a second bot.
loading: contextvars.ContextVar[bool] = contextvars.ContextVar("concordctl_loading", default=False)

_CONTEXT_NAMES = ("Context", "SyncContext")


def _compile(match: str | re.Pattern[str] | None) -> re.Pattern[str] | None:
    if match is None or isinstance(match, re.Pattern):
        return match
    try:
        return re.compile(match)
    except re.error as exc:
        raise UsageError(f"invalid match= regular expression {match!r}: {exc}") from None


def _positional(fn: Callable[..., Any]) -> list[inspect.Parameter] | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p for p in params if p.kind in kinds or p.kind is inspect.Parameter.VAR_POSITIONAL]


def _wants_context(p: inspect.Parameter) -> bool:
    ann = p.annotation
    if ann in (Context, SyncContext):
        return True
    if isinstance(ann, str) and ann.rsplit(".", 1)[-1] in _CONTEXT_NAMES:
        return True
    return p.name == "ctx" and p.kind is not inspect.Parameter.VAR_POSITIONAL


def _shape(fn: Callable[..., Any], fixed: int) -> tuple[bool, bool]:
    """(takes a context as its last parameter, passes the match) for on/every/hooks."""
    params = _positional(fn)
    if params is None:
        return False, fixed > 1
    context = bool(params) and _wants_context(params[-1])
    rest = params[:-1] if context else params
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in rest):
        return context, fixed > 1
    return context, len(rest) >= 2 and fixed > 1


class Router:
    """Handlers registered with decorators, for a ``Bot`` to ``include``.

    A module of a bigger bot makes a ``Router()``, registers on it exactly as
    on a ``Bot`` (``on``, ``command``, ``every``, ``on_ready``,
    ``on_shutdown``, ``on_error``, ``middleware``), and the bot adds it all
    with ``bot.include(router)``; a command name used twice is an error then.
    """

    def __init__(self) -> None:
        self._routes: list[Route] = []  # every kind, in registration order
        self._commands: dict[str, Route] = {}
        self._middleware: list[Callable[..., Any]] = []
        self._order = 0

    def _add(self, route: Route) -> None:
        for n in route.names:
            if n in self._commands:
                raise UsageError(f"command {n!r} is already registered by {self._commands[n].name}")
        self._routes.append(route)
        for n in route.names:
            self._commands[n] = route

    def _next(self) -> int:
        self._order += 1
        return self._order

    def on(
        self,
        event_type: str | type[Any],
        *,
        channel: Any = None,
        author: Any = None,
        match: str | re.Pattern[str] | None = None,
        thread: int | None = ANY,
        include_self: bool | None = None,
        recovered: bool = True,
        timeout: float | None = None,
        check: Check | Iterable[Check] | None = None,
        cooldown: Cooldown | None = None,
    ) -> Callable[[F], F]:
        """Register a handler for events of a type (a wire name, an event class, or "*").

        Filters: ``channel`` and ``author`` (an id or name, or a collection),
        ``match`` (a regular expression searched in the content; a handler
        with two parameters gets the match object as the second), ``thread``
        (an id, or None for "not in a thread"), ``recovered=False`` to skip
        chats recovered after a reconnect; ``check=`` predicates given the
        event; ``cooldown=`` a :class:`Cooldown`. A last parameter named
        ``ctx`` (or annotated ``Context``/``SyncContext``) gets a context to
        answer through. An unknown type name, or a filter the type cannot
        have, is an error here rather than a handler that never runs.
        """
        types, unknown_only = event_types(event_type)
        pattern = _compile(match)
        if channel is not None:
            check_filter(types, CHANNEL_TYPES, "channel=")
        if author is not None:
            check_filter(types, AUTHOR_TYPES, "author=")
        if pattern is not None:
            check_filter(types, CONTENT_TYPES, "match=")
        if thread is not ANY:
            check_filter(types, THREAD_TYPES, "thread=")
        channels, authors = refs_of(channel, "channel"), refs_of(author, "author")
        checks = checks_of(check)

        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"@bot.on needs a function, got {fn!r}")
            context, pass_match = _shape(fn, 2)
            self._add(
                Route(
                    name=name_of(fn),
                    fn=fn,
                    kind="on",
                    is_async=is_async(fn),
                    order=self._next(),
                    types=types,
                    unknown_only=unknown_only,
                    channels=channels,
                    authors=authors,
                    pattern=pattern,
                    thread=thread,
                    include_self=include_self,
                    recovered=recovered,
                    timeout=timeout,
                    pass_match=pass_match,
                    context_param=context,
                    checks=checks,
                    cooldown=cooldown,
                )
            )
            return fn

        return register

    def command(
        self,
        name: str | None = None,
        *,
        aliases: Iterable[str] = (),
        channel: Any = None,
        author: Any = None,
        match: str | re.Pattern[str] | None = None,
        thread: int | None = ANY,
        include_self: bool | None = None,
        recovered: bool = True,
        timeout: float | None = None,
        help: str | None = None,
        check: Check | Iterable[Check] | None = None,
        denied: str | None = None,
        cooldown: Cooldown | None = None,
        cooldown_message: str | None = None,
        hidden: bool = False,
    ) -> Callable[[F], F]:
        """Register a command: ``!name words...`` calls the handler with a :class:`Context`.

        Parameters after ``ctx`` are bound from the words by annotation (see
        the README); a handler taking only ``ctx`` reads ``ctx.args``. The
        name defaults to the function's; names are case-insensitive. The
        docstring (or ``help=``) is what ``!help`` shows. Policy: ``author=``,
        ``channel=`` (one or a collection), ``check=`` (predicates given the
        Context, sync or async), ``denied=`` (the answer when any of them
        refuses; silent without), ``cooldown=``, ``hidden=True`` (not in help).
        """
        pattern = _compile(match)
        if isinstance(aliases, str):
            aliases = (aliases,)
        channels, authors = refs_of(channel, "channel"), refs_of(author, "author")
        checks = checks_of(check)

        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"@bot.command needs a function, got {fn!r}")
            names = tuple(n.lower() for n in (name or getattr(fn, "__name__", ""), *aliases))
            for n in names:
                if not n or any(ch.isspace() for ch in n):
                    raise UsageError(f"invalid command name {n!r}")
            self._add(
                Route(
                    name=name_of(fn),
                    fn=fn,
                    kind="command",
                    is_async=is_async(fn),
                    order=self._next(),
                    types=frozenset(("chat_sent",)),
                    channels=channels,
                    authors=authors,
                    pattern=pattern,
                    thread=thread,
                    include_self=include_self,
                    recovered=recovered,
                    timeout=timeout,
                    names=names,
                    doc=inspect.cleandoc(help or fn.__doc__ or ""),
                    signature=CommandSignature.of(fn, names[0]),
                    checks=checks,
                    denied=denied,
                    cooldown=cooldown,
                    cooldown_message=cooldown_message,
                    hidden=hidden,
                )
            )
            return fn

        return register

    def every(self, seconds: float, *, now: bool = False) -> Callable[[F], F]:
        """Run a function every ``seconds`` while the bot runs (first after one
        period, or at once with ``now=True``). A run that overruns delays the
        next one; runs never overlap."""
        if seconds <= 0:
            raise UsageError("every(seconds=...) must be positive")
        return self._schedule(Every(seconds, now=now), seconds=seconds, now=now)

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

    def _schedule(self, schedule: Schedule, **extra: Any) -> Callable[[F], F]:
        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"a schedule needs a function, got {fn!r}")
            name = name_of(fn)
            key = str(getattr(fn, "__name__", None) or name)
            if any(r.job is not None and r.job.key == key for r in self._routes):
                raise UsageError(f"a job named {key!r} is already scheduled")
            job = Job(name, fn, schedule, key=key, is_async=is_async(fn))
            self._add(self._plain(fn, "every", job=job, **extra))
            # A bound method or builtin cannot carry it: bot.jobs[name] still works.
            with contextlib.suppress(AttributeError):
                fn.job = job  # type: ignore[attr-defined]
            return fn

        return register

    def _plain(self, fn: Callable[..., Any], kind: Kind, **extra: Any) -> Route:
        context, _ = _shape(fn, 0)
        return Route(
            name=name_of(fn),
            fn=fn,
            kind=kind,
            is_async=is_async(fn),
            order=self._next(),
            context_param=context,
            **extra,
        )

    def on_ready(self, fn: F) -> F:
        """Run once the bot is connected and listening (again after a --reload)."""
        self._add(self._plain(fn, "on_ready"))
        return fn

    def on_shutdown(self, fn: F) -> F:
        """Run at shutdown (and before a --reload swaps in the new code)."""
        self._add(self._plain(fn, "on_shutdown"))
        return fn

    def on_error(self, fn: F) -> F:
        """Given a :class:`HandlerError` for every handler exception or timeout."""
        self._add(
            Route(
                name=name_of(fn), fn=fn, kind="on_error", is_async=is_async(fn), order=self._next()
            )
        )
        return fn

    def middleware(self, fn: F) -> F:
        """``async def mw(call, call_next)`` around every handler call, in registration order."""
        if not inspect.iscoroutinefunction(fn):
            raise UsageError(f"middleware {name_of(fn)} must be an async def")
        self._middleware.append(fn)
        return fn

    def include(self, router: Router) -> None:
        """Add everything registered on ``router`` (a command name clash is an error)."""
        if router is self:
            raise UsageError("a router cannot include itself")
        clash = sorted(set(router._commands) & set(self._commands))
        if clash:
            n = clash[0]
            raise UsageError(
                f"command {n!r} is registered by both {self._commands[n].name} "
                f"and {router._commands[n].name}"
            )
        for route in router._routes:
            self._add(dataclasses.replace(route, order=self._next()))
        self._middleware.extend(router._middleware)

    @property
    def commands(self) -> dict[str, Callable[..., Any]]:
        """Command names and aliases to their handlers."""
        return {n: r.fn for n, r in self._commands.items()}


class Bot(Router, StateMixin):
    """A bot: handlers registered with decorators, run against a Concord server.

    Arguments (all optional):

    * ``prefix``: what starts a command (``"!"``).
    * ``concurrency``: handler calls running at once (64).
    * ``timeout``: seconds a handler may run before it is cancelled (60; None: no limit).
    * ``grace``: seconds running handlers get to finish at shutdown (10).
    * ``ignore_self``: skip chats the bot wrote itself (True); per handler ``include_self=True``.
    * ``unknown_command``: ``"ignore"`` or ``"reply"`` (answers with a pointer to help).
    * ``help_command``: provide ``!help`` listing commands and their usage (True).
    * ``send_rate`` / ``send_burst``: writes per second and burst (5, 10).
    * ``loop_limit``: writes allowed within 10 s while handling the bot's own chats (5).
    * ``watchdog``: seconds of silence after which the stream is reopened (300; None: off).
    * ``health_file``: path touched every second while connected and not stalled.
    * ``dead_letters``: NDJSON file where events whose handler failed are appended.
    * ``max_backlog``: events waiting in lanes before the stream is paused (10,000).
    * ``cooldown_message``: the answer past a cooldown (``"⏳ {command} again in {seconds} s"``).
    * ``state``: where ``bot.store(...)`` and the stream cursor live: None (memory), a
      SQLite file or a ``postgresql://`` URL (replicas; see ``concordctl run --state``).
    * ``lease``: on a durable state, seconds a replica (or a restarted bot's
      predecessor) that stopped beating keeps its claims and jobs before
      another takes them over (6; it beats every third of that).
    * ``clock``: the clock schedules run on (the test harness steps its own).
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
        cooldown_message: str = "⏳ {command} again in {seconds} s",
        state: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        lease: float = 6.0,
    ) -> None:
        super().__init__()
        if not lease > 0:
            raise UsageError("lease must be a positive number of seconds")
        self._state = BotState(state, clock, lease)
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
        self.cooldown_message = cooldown_message
        self._help = Route(
            name="help",
            fn=builtin_help,
            kind="command",
            is_async=True,
            order=0,
            types=frozenset(("chat_sent",)),
            names=("help",),
            doc=HELP_DOC,
        )
        self._runtime: Runtime | None = None
        self._stop_early = False

    def _add(self, route: Route) -> None:
        super()._add(route)
        if route.job is not None:
            self._state.jobs.add(route.job)

    # -- the route table ---------------------------------------------------

    def options(self) -> Options:
        return Options(
            prefix=self.prefix,
            concurrency=self.concurrency,
            timeout=self.timeout,
            grace=self.grace,
            ignore_self=self.ignore_self,
            unknown_command=self.unknown_command,
            help_command=self.help_command,
            send_rate=self.send_rate,
            send_burst=self.send_burst,
            loop_limit=self.loop_limit,
            watchdog=self.watchdog,
            health_file=self.health_file,
            dead_letters=self.dead_letters,
            max_backlog=self.max_backlog,
            cooldown_message=self.cooldown_message,
        )

    def table(self) -> RouteTable:
        """Everything registered, frozen with the current settings."""
        by_kind: dict[str, list[Route]] = {}
        for r in self._routes:
            by_kind.setdefault(r.kind, []).append(r)
        return RouteTable(
            options=self.options(),
            listeners=tuple(by_kind.get("on", ())),
            commands=MappingProxyType(dict(self._commands)),
            periodic=tuple(by_kind.get("every", ())),
            on_ready=tuple(by_kind.get("on_ready", ())),
            on_shutdown=tuple(by_kind.get("on_shutdown", ())),
            on_error=tuple(by_kind.get("on_error", ())),
            middleware=tuple(self._middleware),
            help=self._help if self.help_command else None,
            owner=self,
        )

    @property
    def commands(self) -> dict[str, Callable[..., Any]]:
        """Command names and aliases to their handlers (built-in help included)."""
        found = super().commands
        if self.help_command and "help" not in found:
            found["help"] = self._help.fn
        return found

    # -- running -----------------------------------------------------------

    @property
    def client(self) -> Client:
        """The bot's connected Client (writes through it are rate limited)."""
        rt = self._runtime
        if rt is None or rt.finished:
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
        await self._runtime.life.ready.wait()

    def stop(self) -> None:
        """Ask the bot to stop: no new events, running handlers get ``grace`` seconds."""
        if self._runtime is None or self._runtime.finished:
            self._stop_early = True
        else:
            self._runtime.request_stop()

    async def wait_for(
        self,
        event_type: str | type[Any],
        *,
        timeout: float | None = None,
        check: Callable[[Any], bool] | None = None,
        channel: Any = None,
        author: Any = None,
        match: str | re.Pattern[str] | None = None,
    ) -> Event:
        """The next event of a type (and filters, as for ``on``); TimeoutError after ``timeout``.

        Inside a handler the wait does not hold the handler's lane or count
        against its timeout.
        """
        rt = self._runtime
        if rt is None or rt.finished:
            raise UsageError("bot.wait_for needs a running bot")
        types, _unknown = event_types(event_type)
        pattern = _compile(match)
        channels = {await _resolve(rt, "c", r) for r in refs_of(channel, "channel")}
        authors = {await _resolve(rt, "u", r) for r in refs_of(author, "author")}

        def predicate(ev: Any) -> bool:
            if channels and event_channel_id(ev) not in channels:
                return False
            if authors and event_author_id(ev) not in authors:
                return False
            if pattern is not None:
                content = event_content(ev)
                if content is None or pattern.search(content) is None:
                    return False
            return check is None or bool(check(ev))

        return await rt.wait_for_event(types, predicate, timeout)

    async def serve(
        self,
        client: Client | None = None,
        *,
        events: EventSource | None = None,
        dry_run: WriteHook | None = None,
        cursor: CursorStore | None = None,
        on_handler_error: Observer | None = None,
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
        doing it. ``cursor``: where the stream cursor is loaded from and saved
        to. ``on_handler_error``: also called with every :class:`HandlerError`.
        """
        if self._runtime is not None and not self._runtime.finished:
            raise UsageError("this bot is already running")
        table = self.table()
        observers = (on_handler_error,) if on_handler_error is not None else ()
        if client is None and (events is None or client_options):
            from concordctl.client import Client as _Client

            async with _Client(**client_options) as own:
                await self._serve(table, own, events, dry_run, cursor, observers)
        else:
            await self._serve(table, client, events, dry_run, cursor, observers)

    async def _serve(
        self,
        table: RouteTable,
        client: Any,
        events: EventSource | None,
        dry_run: WriteHook | None,
        cursor: CursorStore | None,
        observers: tuple[Observer, ...],
    ) -> None:
        rt = Runtime(
            table, client, dry_run=dry_run, cursor=cursor, observers=observers, state=self._state
        )
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

        items: list[Event | Targeted] = []
        for number, raw in enumerate(lines, 1):
            text = raw.decode() if isinstance(raw, bytes) else raw
            if not text.strip():
                continue
            try:
                ev = decode_event(text)
                target = None
                obj = json.loads(text)
                if isinstance(obj, dict) and isinstance(obj.get(DEAD_LETTER_KEY), dict):
                    target = obj[DEAD_LETTER_KEY].get("handler")
            except (FrameError, ValueError) as exc:
                log.warning("replay: line %d skipped: %s", number, exc)
                continue
            items.append(Targeted(ev, target) if isinstance(target, str) else ev)

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
        if loading.get():
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

        This bot's on_shutdown hooks run, then new events go to ``new``'s
        handlers (handlers already running finish on the old code), ``new``'s
        periodic tasks replace the old ones and its on_ready hooks run.
        """
        rt = self._runtime
        if rt is None or rt.finished:
            raise UsageError("swap() needs a running bot")
        await rt.adopt(new.table(), new._state)
        new._runtime = rt


async def _resolve(rt: Runtime, kind: str, ref: int | str) -> int:
    if isinstance(ref, int):
        return ref
    client = rt.raw_client
    if client is None:
        raise UsageError(f"{ref!r} is a name, which needs a server to look up")
    found = await (client.channel(ref) if kind == "c" else client.user(ref))
    return int(found.id)
