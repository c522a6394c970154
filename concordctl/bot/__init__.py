"""Bots: decorators that route Concord events to typed handlers.

::

    bot = Bot(prefix="!")

    @bot.command("deploy", author={"alice", "bob"}, cooldown=Cooldown(1, per=30))
    async def deploy(ctx: Context, service: Literal["web", "api"], *, force: bool = False) -> None:
        await ctx.reply(f"deploying {service}")

    bot.run()

The package, one direction of imports (each module names what it does)::

    registry  (Bot, Router, decorators) ──builds──▶ routes (RouteTable, Route, Options)
        │                                              ▲
        └──runs──▶ runtime (State, lifecycle) ─────────┘
                     ├─▶ feed (source, cursor, waiters first) ─▶ dispatch (routes per event)
                     ├─▶ lanes (order, concurrency, timeouts, suspension)
                     ├─▶ calls (policy, binding, cooldowns, middleware, HandlerError)
                     │     └─▶ commands (words, converters, usage) · policy · context
                     └─▶ writes (pacing, loop guard, dry run, dead letters)

How events are dispatched (the promises handlers can rely on):

* Every event goes to every handler whose type and filters match it, in the
  order the handlers were registered. Pending waiters (``bot.wait_for``) see
  it first.
* **Ordering.** Each handler has one *lane* per channel (events without a
  channel share one lane): a handler sees the events of one channel one at a
  time, in stream order. Lanes of different handlers or channels run
  concurrently, so a slow handler delays only its own lane.
* **Bounded concurrency.** At most ``concurrency`` handler calls (default 64)
  run at once. At most ``max_backlog`` events (default 10,000) wait in lanes;
  beyond that the bot stops reading the stream until handlers catch up.
* **Isolation.** A handler that raises is logged with its traceback and the
  event (and appended to the dead-letter file, if any), then given to the
  ``on_error`` hooks; a handler that runs past its ``timeout`` is cancelled,
  logged and reported the same way. Either way the bot goes on.
* Plain ``def`` handlers run in a worker thread so they cannot block the
  event loop; they get a :class:`SyncContext` whose ``reply`` etc. block.
* An ``async def`` ``on`` handler with no ``await`` at all cannot suspend, so
  it runs inline as its event arrives, without a lane or a task.
"""

from __future__ import annotations

from concordctl.bot.calls import Call, HandlerError
from concordctl.bot.commands import ArgumentError, Duration, Rest, User, parse_command
from concordctl.bot.context import Context, SyncContext
from concordctl.bot.events import describe
from concordctl.bot.feed import CursorStore, EventSource
from concordctl.bot.policy import Cooldown
from concordctl.bot.registry import Bot, Router, loading
from concordctl.bot.routes import never_suspends as _never_suspends
from concordctl.bot.runtime import State
from concordctl.bot.signals import run_with_signals
from concordctl.bot.writes import SendLoopError
from concordctl.protocol import Channel

__all__ = [
    "ArgumentError",
    "Bot",
    "Call",
    "Channel",
    "Context",
    "Cooldown",
    "CursorStore",
    "Duration",
    "EventSource",
    "HandlerError",
    "Rest",
    "Router",
    "SendLoopError",
    "State",
    "SyncContext",
    "User",
    "describe",
    "parse_command",
    "run_with_signals",
]

#: Set by `concordctl run` while it imports a bot file (see registry.loading).
_loading = loading
_ = _never_suspends
