"""The route table: what the registry built, frozen, and all the runtime reads of it.

:class:`Route` is one registered handler (``on``, ``command``, ``every``, a
hook or an error hook) and its policy; :class:`RouteTable` is all of them plus
the bot's :class:`Options`, with the per-type routes worked out once. Both are
immutable: a run keeps its own state (lanes, resolved ids, cooldown buckets)
in the runtime, so two ``serve()`` calls or a ``swap()`` share nothing by
accident. The registry (``registry.py``) builds tables; the runtime
(``runtime.py``) runs them; neither imports the other's way back.
"""

from __future__ import annotations

import dis
import inspect
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from concordctl.bot.events import ANY
from concordctl.protocol import EVENT_TYPES

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.bot.commands import CommandSignature
    from concordctl.bot.policy import Check, Cooldown

__all__ = ["Kind", "Options", "Route", "RouteTable", "is_async", "name_of", "never_suspends"]

Kind = Literal["on", "command", "every", "on_ready", "on_shutdown", "on_error"]

DEAD_LETTER_KEY = "concordctlDeadLetter"


@dataclass(frozen=True, slots=True)
class Options:
    """The bot's settings, as they were when ``serve()`` started (see ``Bot``)."""

    prefix: str = "!"
    concurrency: int = 64
    timeout: float | None = 60.0
    grace: float = 10.0
    ignore_self: bool = True
    unknown_command: Literal["ignore", "reply"] = "ignore"
    help_command: bool = True
    send_rate: float = 5.0
    send_burst: int = 10
    loop_limit: int = 5
    watchdog: float | None = 300.0
    health_file: str | os.PathLike[str] | None = None
    dead_letters: str | os.PathLike[str] | None = None
    max_backlog: int = 10_000
    cooldown_message: str = "⏳ {command} again in {seconds} s"


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """One registered handler and what it accepts. Compared by identity."""

    name: str
    fn: Callable[..., Any]
    kind: Kind
    is_async: bool
    order: int = 0
    types: frozenset[str] | None = None  # None: every type ("*")
    unknown_only: bool = False
    channels: tuple[int | str, ...] = ()  # empty: any channel
    authors: tuple[int | str, ...] = ()
    pattern: re.Pattern[str] | None = None
    thread: Any = ANY
    include_self: bool | None = None  # None: the bot's setting
    recovered: bool = True
    timeout: float | None = None  # None: the bot's setting
    pass_match: bool = False  # ``on``: a second positional parameter gets the match
    context_param: bool = False  # on/every/hooks: the last parameter gets a context
    names: tuple[str, ...] = ()  # a command's name and aliases
    doc: str = ""
    signature: CommandSignature | None = None
    checks: tuple[Check, ...] = ()
    denied: str | None = None
    cooldown: Cooldown | None = None
    cooldown_message: str | None = None
    hidden: bool = False
    seconds: float = 0.0  # every
    now: bool = False  # every: first run at once
    job: Any = None  # every/at/cron: its schedule.Job
    inline: bool = field(init=False, default=False)
    #: A command whose handler and checks cannot suspend and that looks nothing up.
    inline_command: bool = field(init=False, default=False)
    filtered: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        filtered = bool(
            self.channels
            or self.authors
            or self.pattern is not None
            or self.thread is not ANY
            or not self.recovered
        )
        object.__setattr__(self, "filtered", filtered)
        inline = (
            self.kind == "on"
            and self.is_async
            and not self.checks
            and self.cooldown is None
            and not self.context_param
            and never_suspends(self.fn)
        )
        object.__setattr__(self, "inline", inline)
        inline_command = (
            self.kind == "command"
            and self.is_async
            and not any(is_async(c) for c in self.checks)
            and not (self.signature is not None and self.signature.lookups)
            and never_suspends(self.fn)
        )
        object.__setattr__(self, "inline_command", inline_command)

    def limit(self, default: float | None) -> float | None:
        return self.timeout if self.timeout is not None else default


@dataclass(frozen=True, eq=False)
class RouteTable:
    """Every route of a bot, and the lookups dispatch needs, computed once."""

    options: Options
    listeners: tuple[Route, ...] = ()
    commands: Mapping[str, Route] = field(default_factory=lambda: MappingProxyType({}))
    periodic: tuple[Route, ...] = ()
    on_ready: tuple[Route, ...] = ()
    on_shutdown: tuple[Route, ...] = ()
    on_error: tuple[Route, ...] = ()
    middleware: tuple[Callable[..., Any], ...] = ()
    help: Route | None = None
    #: What ``ctx.bot`` returns; the runtime hands it on and never looks inside.
    owner: object = None
    by_type: Mapping[str, tuple[Route, ...]] = field(init=False)
    unknown: tuple[Route, ...] = field(init=False)
    #: ``by_type["chat_sent"]``, the routes of most events, without the lookup.
    chat_listeners: tuple[Route, ...] = field(init=False)
    #: When every chat_sent route is a plain await-free one: just their functions.
    chat_fast: tuple[Callable[..., Any], ...] | None = field(init=False)
    has_commands: bool = field(init=False)

    def __post_init__(self) -> None:
        by_type = {
            t: tuple(
                r
                for r in self.listeners
                if (r.types is None or t in r.types) and not r.unknown_only
            )
            for t in EVENT_TYPES
        }
        set_ = object.__setattr__
        set_(self, "by_type", MappingProxyType(by_type))
        set_(
            self,
            "unknown",
            tuple(r for r in self.listeners if r.types is None or r.unknown_only),
        )
        chat = by_type["chat_sent"]
        set_(self, "chat_listeners", chat)
        simple = not self.middleware and all(
            r.inline and not r.filtered and not r.pass_match for r in chat
        )
        set_(self, "chat_fast", tuple(r.fn for r in chat) if simple else None)
        o = self.options
        set_(
            self,
            "has_commands",
            bool(self.commands) or o.help_command or o.unknown_command == "reply",
        )

    def command(self, name: str) -> Route | None:
        route = self.commands.get(name)
        if route is None and name == "help" and self.options.help_command:
            return self.help
        return route

    def inline(self, route: Route) -> bool:
        return route.inline and not self.middleware

    def event_routes(self) -> list[Route]:
        """Every route that an event can reach (listeners and commands, once each)."""
        seen: dict[int, Route] = {id(r): r for r in self.listeners}
        for r in self.commands.values():
            seen.setdefault(id(r), r)
        if self.help is not None:
            seen.setdefault(id(self.help), self.help)
        return list(seen.values())

    def visible_commands(self) -> list[Route]:
        """Commands once each, in registration order, help included."""
        found: dict[int, Route] = {}
        for r in self.commands.values():
            found.setdefault(id(r), r)
        if self.options.help_command and "help" not in self.commands and self.help is not None:
            found.setdefault(id(self.help), self.help)
        return sorted(found.values(), key=lambda r: r.order)


def is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


def name_of(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or fn)


# Opcodes through which a coroutine can suspend (await, async for, async with).
_SUSPENDING_OPS = frozenset(
    ("GET_AWAITABLE", "SEND", "YIELD_VALUE", "GET_AITER", "GET_ANEXT", "BEFORE_ASYNC_WITH")
)


def never_suspends(fn: Callable[..., Any]) -> bool:
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
