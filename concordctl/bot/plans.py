"""Command plans: one plain command's per-chat work, worked out once per route table.

A command chat normally takes the general path: ``Dispatcher._command``
splits the name off, looks the route up, applies its filters and makes the
Context, and ``Calls.run_inline`` runs the checks, binds the words, counts
the cooldown and calls the handler. At each step that code asks which case
it is in (a filter? middleware? which cooldown key? which binder?), and for
most commands the answer is the same for every chat. A plan asks once, when
the dispatcher is given its route table (``Dispatcher.use``): it is a
function per command name that does only the work left for one chat, with
the route's checks, binder, cooldown window and clock bound in. It exists
for speed only (with the quick binder, a typed command chat costs ~40% less).

So a plan must do exactly what the general path does: the same handler
call, refusal, argument error, cooldown answer or reported failure
(tests/bot/test_plans.py runs both side by side). It is made only where the
general path would run the command inline (an await-free handler and checks,
nothing to look up: ``Route.inline_command``), on a table without
middleware, for a route with no author/channel/match/thread/recovered
filter. The dispatcher (and the feed's fast path) use it only for a chat
whose first word is exactly the prefix and a name (``!deploy``, not
``!Deploy`` or ``!deploy\nweb``), not the bot's own, on a run without
claims (a durable state). Everything else takes the general path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from concordctl.bot.calls import Denied, HandlerError, Reporter
from concordctl.bot.commands import ArgumentError
from concordctl.bot.context import CommandContext, Host
from concordctl.bot.events import describe
from concordctl.bot.policy import CooldownBuckets, seconds_text
from concordctl.bot.routes import Route, RouteTable
from concordctl.bot.writes import SendLoopError
from concordctl.protocol import ChatSent

__all__ = ["Plan", "command_plans", "plan_for"]

log = logging.getLogger("concordctl.bot")

#: A plan: given the chat and the text after ``prefix + name + " "``, runs the
#: command and returns the answer to queue (a refusal, an argument error, a
#: cooldown), if any.
Plan = Callable[[ChatSent, str], Denied | None]


def command_plans(
    table: RouteTable, host: Host, reporter: Reporter, buckets: CooldownBuckets
) -> dict[str, Plan]:
    """The plans of ``table``'s commands, by the first word that calls them (``"!deploy"``)."""
    prefix = table.options.prefix
    if table.middleware or " " in prefix:  # a prefix with a space: never one first word
        return {}
    plans: dict[str, Plan] = {}
    for name, route in table.commands.items():
        if route.inline_command and not route.filtered:
            plans[prefix + name] = plan_for(route, name, prefix, host, reporter, buckets)
    return plans


def plan_for(
    route: Route, name: str, prefix: str, host: Host, reporter: Reporter, buckets: CooldownBuckets
) -> Plan:
    """The plan of one command name (see the module docstring for when it applies)."""
    fn = route.fn
    checks = route.checks
    denied = route.denied
    sig = route.signature
    bind = sig.bind if sig is not None else None
    quick = sig.quick if sig is not None else None
    no_kwargs: Mapping[str, Any] = {}
    cd = route.cooldown
    window = buckets.window(route, cd) if cd is not None else None
    by_user = cd is not None and cd.key == "user"  # window.bucket(), spelt out
    by_channel = cd is not None and cd.key == "channel"
    clock = _clock(host.loop)

    def run(ev: ChatSent, rest: str) -> Denied | None:
        # rest.strip(): what the general path's split leaves, then rstrip()s.
        ctx = CommandContext(host, ev, name, rest.strip(), prefix, route)
        try:
            for check in checks:
                if not check(ctx):
                    return Denied(ctx, denied) if denied else None
            args: tuple[Any, ...]
            if bind is None:
                args, kwargs = (ctx,), no_kwargs
            elif quick is not None:
                try:
                    args, kwargs = quick(ctx.text, ctx)
                except Exception:  # not a line for it: the general binder says what is wrong
                    positional, kwargs = bind(ctx.text)
                    args = (ctx, *positional)
            else:
                positional, kwargs = bind(ctx.text)
                args = (ctx, *positional)
            if window is not None:
                c = ev.chat
                bucket = c.author_id if by_user else c.channel_id if by_channel else None
                wait = window.take(bucket, clock())
                if wait:
                    template = route.cooldown_message or host.table.options.cooldown_message
                    return Denied(
                        ctx, template.format(command=prefix + name, seconds=seconds_text(wait))
                    )
            for _ in fn(*args, **kwargs).__await__():
                raise RuntimeError("an await-free handler suspended")  # cannot happen
        except ArgumentError as exc:
            return Denied(ctx, f"{exc}\nusage: {ctx.usage}")
        except SendLoopError:
            pass
        except Exception as exc:
            log.error("handler %s raised on %s", route.name, describe(ev), exc_info=exc)
            reporter.failed(HandlerError(route.name, exc, event=ev, ctx=ctx, kind=route.kind))
        return None

    return run


def _clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time``; ``time.monotonic`` itself when that is all it is (asyncio's own loops)."""
    if getattr(loop.time, "__func__", None) is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time
