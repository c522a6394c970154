"""Dispatch: one event to every route that accepts it (no awaiting here).

Await-free ``on`` handlers run right here (they cannot suspend, so they need
no task); every other call is queued in its lane (``lanes.py``). Commands are
found by name; a command whose ``author=``/``channel=`` refuses the chat gets
its ``denied=`` answer queued instead. A command with a plan (``plans.py``:
the common, await-free kind) runs through it instead of ``_command`` and
``Calls.run_inline``. This is the hot path: it is written for ``chat_sent``
with plain handlers first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from concordctl.bot.calls import Calls, Denied, HandlerError
from concordctl.bot.commands import split_command
from concordctl.bot.context import CommandContext, Context
from concordctl.bot.events import ANY, describe
from concordctl.bot.lanes import Lanes
from concordctl.bot.plans import Plan, command_plans
from concordctl.bot.routes import Route, RouteTable
from concordctl.protocol import (
    THREAD_TYPES,
    ChatSent,
    Event,
    UnknownEvent,
    event_author_id,
    event_channel_id,
    event_content,
    event_thread_id,
)

__all__ = ["Dispatcher", "Filters", "Targeted", "unknown_command_route"]

log = logging.getLogger("concordctl.bot")

_NO = object()  # a filter rejected the event
_DENIED = object()  # an author/channel filter of a command refused it


@dataclass(frozen=True, slots=True)
class Filters:
    """A route's channel and author filters resolved to ids (None: no such filter)."""

    channels: frozenset[int] | None
    authors: frozenset[int] | None


@dataclass(frozen=True, slots=True)
class Targeted:
    """A replayed dead letter: the event, for one handler only."""

    event: Event
    handler: str


class Dispatcher:
    """Hands events to routes; one per run, re-pointed by :meth:`use` on a swap."""

    def __init__(self, host: Any, lanes: Lanes, calls: Calls) -> None:
        self._host = host  # the runtime: its self_id and ignore_self are read live
        self._lanes = lanes
        self._calls = calls
        self.table: RouteTable | None = None
        self._filters: Mapping[Route, Filters] = {}
        #: The table's command plans by first word (plans.py), made in :meth:`use`.
        self.plans: Mapping[str, Plan] = {}
        self.last_chat_id = 0  # the newest chat id dispatched here
        #: On a durable state (state.py): no inline calls, every call claimed,
        #: and ``on_chat(chat id, calls queued)`` after each chat for the cursor.
        self.claimed = False
        self.on_chat: Callable[[int, int], None] | None = None
        self._queued = 0

    def _enqueue(self, route: Route, key: int | None, item: Any) -> None:
        self._queued += 1
        self._lanes.enqueue(route, key, item)

    def redispatch(self, ev: Event, handler: str) -> None:
        """Run ``ev`` again for ``handler`` only (a claim taken over from a dead replica)."""
        self.dispatch(Targeted(ev, handler))

    def use(self, table: RouteTable, filters: Mapping[Route, Filters]) -> None:
        self.table = table
        self._filters = filters
        self.plans = command_plans(table, self._host, self._calls.reporter, self._calls.buckets)

    def dispatch(self, ev: Any) -> None:
        table = self.table
        assert table is not None
        cls = ev.__class__
        if cls is ChatSent:
            self.chat(ev, ev.chat.content.startswith(table.options.prefix))
        elif cls is Targeted:
            self._targeted(table, ev)
        elif cls is UnknownEvent:
            self._to(table.unknown, ev, False, None)
        else:
            self._to(table.by_type.get(ev.type, ()), ev, False, None)

    def chat(self, ev: ChatSent, prefixed: bool) -> None:
        """Dispatch a chat; ``prefixed``: it starts with the prefix (the feed has looked)."""
        table = self.table
        assert table is not None
        chat = ev.chat
        if chat.id > self.last_chat_id:
            self.last_chat_id = chat.id
        own = chat.author_id == self._host.self_id
        self._queued = 0
        if prefixed and table.has_commands:
            head, _, rest = chat.content.partition(" ")
            plan = self.plans.get(head)
            if plan is None or own or self.claimed:
                self._command(table, ev, own, None)
            else:
                refused = plan(ev, rest)
                if refused is not None:
                    self.refuse(ev, refused, own)
        routes = table.chat_listeners
        if routes:
            self._to(routes, ev, own, None)
        if self.on_chat is not None:
            self.on_chat(chat.id, self._queued)

    def refuse(self, ev: ChatSent, refused: Denied, own: bool) -> None:
        route = refused.ctx.route
        assert route is not None
        self._enqueue(route, ev.chat.channel_id, (ev, refused, own))

    def dispatch_answered(self, ev: Any) -> None:
        """A chat a waiter took as its answer: to ``on`` handlers only, not as a command."""
        table = self.table
        assert table is not None
        if ev.__class__ is ChatSent:
            if ev.chat.id > self.last_chat_id:
                self.last_chat_id = ev.chat.id
            own = ev.chat.author_id == self._host.self_id
            self._to(table.chat_listeners, ev, own, None)
        else:
            self.dispatch(ev)

    def _targeted(self, table: RouteTable, item: Targeted) -> None:
        ev = item.event
        own = False
        if isinstance(ev, ChatSent):
            own = ev.chat.author_id == self._host.self_id
            self._command(table, ev, own, item.handler)
            route = table.chat_listeners
        elif isinstance(ev, UnknownEvent):
            route = table.unknown
        else:
            route = table.by_type.get(ev.type, ())
        self._to(route, ev, own, item.handler)

    def _wants_own(self, route: Route) -> bool:
        return route.include_self if route.include_self is not None else not self._host.ignore_self

    def _to(self, routes: tuple[Route, ...], ev: Any, own: bool, only: str | None) -> None:
        key: int | None = None
        keyed = False
        inline_ok = self.table is not None and not self.table.middleware and not self.claimed
        for route in routes:
            if only is not None and route.name != only:
                continue
            if own and not self._wants_own(route):
                continue
            extra: Any = None
            if route.filtered:
                extra = self.accepts(route, ev)
                if extra is _NO or extra is _DENIED:
                    continue
            if route.inline and inline_ok:
                try:
                    call = route.fn(ev, extra) if route.pass_match else route.fn(ev)
                    for _ in call.__await__():
                        raise RuntimeError("an await-free handler suspended")  # cannot happen
                except Exception as exc:
                    self.inline_failed(route, ev, exc)
                continue
            if not keyed:
                key = event_channel_id(ev)
                keyed = True
            self._enqueue(route, key, (ev, extra, own))

    def inline_failed(self, route: Route, ev: Any, exc: Exception) -> None:
        log.error("handler %s raised on %s", route.name, describe(ev), exc_info=exc)
        self._calls.reporter.failed(HandlerError(route.name, exc, event=ev, kind=route.kind))

    def permits(self, route: Route, ev: Any) -> bool:
        """Whether ``route``'s author and channel filters let ``ev`` through."""
        f = self._filters.get(route)
        if f is None:
            return True
        if f.channels is not None and event_channel_id(ev) not in f.channels:
            return False
        return f.authors is None or event_author_id(ev) in f.authors

    def accepts(self, route: Route, ev: Any) -> Any:
        """_NO, _DENIED (author/channel refused), or the match object (None without match=)."""
        if not route.recovered and getattr(ev, "recovered", False):
            return _NO
        f = self._filters.get(route)
        if f is not None:
            if f.channels is not None and event_channel_id(ev) not in f.channels:
                return _DENIED
            if f.authors is not None and event_author_id(ev) not in f.authors:
                return _DENIED
        if route.thread is not ANY and (
            ev.type not in THREAD_TYPES or event_thread_id(ev) != route.thread
        ):
            return _NO
        if route.pattern is not None:
            content = event_content(ev)
            if content is None:
                return _NO
            m = route.pattern.search(content)
            return _NO if m is None else m
        return None

    def _command(self, table: RouteTable, ev: ChatSent, own: bool, only: str | None) -> None:
        prefix = table.options.prefix
        found = split_command(ev.chat.content, prefix)
        if found is None:
            return
        name, body = found
        route = table.commands.get(name) or table.command(name)
        if only is not None and (route is None or route.name != only):
            return
        if own and not (
            self._wants_own(route) if route is not None else not self._host.ignore_self
        ):
            return
        if route is None:
            if table.options.unknown_command != "reply" or ev.recovered:
                return
            route = _UNKNOWN
        match: Any = None
        if route.filtered:
            match = self.accepts(route, ev)
            if match is _NO:
                return
        ctx = CommandContext(self._host, ev, name, body.rstrip(), prefix, route)
        if match is _DENIED:
            if route.denied:
                self._enqueue(route, ev.chat.channel_id, (ev, Denied(ctx, route.denied), own))
            return
        ctx.match = match
        if route.inline_command and not table.middleware and not own and not self.claimed:
            answer = self._calls.run_inline(route, ev, ctx)
            if answer:
                self._enqueue(route, ev.chat.channel_id, (ev, Denied(ctx, answer), own))
            return
        self._enqueue(route, ev.chat.channel_id, (ev, ctx, own))


async def _reply_unknown(ctx: Context) -> None:
    options = ctx._host.table.options
    hint = f"; try {ctx.prefix}help" if options.help_command else ""
    await ctx.reply(f"unknown command {ctx.prefix}{ctx.command}{hint}")


_UNKNOWN = Route(
    name="unknown-command", fn=_reply_unknown, kind="command", is_async=True, names=("?",)
)


def unknown_command_route() -> Route:
    return _UNKNOWN
