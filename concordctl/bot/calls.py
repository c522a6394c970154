"""Calling a handler: the one place a handler call is wrapped.

:class:`Calls` takes one lane item (or a periodic run, or a hook) and does,
in order: the checks (a refusal answers ``denied=`` or nothing), the binding
of a command's words (an :class:`ArgumentError` answers with the usage
line), the cooldown (answers "again in N s"), then the middleware chain
around the handler itself. A handler's exception or timeout goes to
:class:`Reporter`: a log line with the traceback, a dead letter, then the
``on_error`` hooks and any observer (the test harness) with a
:class:`HandlerError`.

Middleware is where later layers hook in (a replica claim, timing, tracing):
``async def mw(call: Call, call_next) -> None``; not awaiting ``call_next()``
skips the handler.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from concordctl.bot.claims import current_claim
from concordctl.bot.commands import ArgumentError, Lookup
from concordctl.bot.context import Context, SyncContext
from concordctl.bot.events import describe
from concordctl.bot.policy import CooldownBuckets, passes, seconds_text
from concordctl.bot.routes import Kind, Route, RouteTable
from concordctl.bot.writes import DeadLetters, SendLoopError, answering_self
from concordctl.errors import ConcordError, NotFound
from concordctl.protocol import Event, event_author_id, event_channel_id

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.bot.state import Durable

__all__ = ["Call", "Calls", "Denied", "HandlerError", "Reporter"]

log = logging.getLogger("concordctl.bot")

Observer = Callable[["HandlerError"], None]


@dataclass(frozen=True, slots=True)
class Call:
    """One handler call, as middleware sees it."""

    handler: str  # the handler's name
    event: Event | None  # None for a periodic task
    ctx: Context | None  # the command's context (None for ``on`` and periodic calls)
    kind: Kind
    route: Route


@dataclass(frozen=True, slots=True)
class Denied:
    """A lane item's payload: answer ``text`` to a refused command."""

    ctx: Context
    text: str


class HandlerError(Exception):
    """A handler, command, periodic task or hook raised or timed out (given to ``on_error``)."""

    def __init__(
        self,
        handler: str,
        exception: BaseException | None,
        *,
        event: Event | None = None,
        ctx: Context | None = None,
        timed_out: bool = False,
        kind: Kind = "on",
    ) -> None:
        self.handler = handler
        self.exception = exception
        self.event = event
        self.ctx = ctx
        self.timed_out = timed_out
        self.kind = kind
        what = "timed out" if timed_out else f"raised {exception!r}"
        super().__init__(f"handler {handler} {what}")

    @property
    def traceback(self) -> str:
        """The handler's traceback as text ('' for a timeout)."""
        exc = self.exception
        if exc is None:
            return ""
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class _Host(Protocol):
    @property
    def table(self) -> RouteTable: ...

    @property
    def client(self) -> Any: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...


class Reporter:
    """Where handler failures go: log, dead letters, error hooks, observers."""

    def __init__(self, host: _Host, dead: DeadLetters | None, executor: ThreadPoolExecutor) -> None:
        self._host = host
        self._dead = dead
        self._executor = executor
        self.observers: list[Observer] = []
        self.failures = 0
        self.timeouts = 0
        self._hook_tasks: set[asyncio.Task[None]] = set()

    def failed(self, err: HandlerError) -> None:
        if err.timed_out:
            self.timeouts += 1
        else:
            self.failures += 1
        if err.event is not None and self._dead is not None:
            why = (
                "timed out" if err.timed_out else f"{type(err.exception).__name__}: {err.exception}"
            )
            self._dead.add(err.event, err.handler, why)
        for observe in self.observers:
            try:
                observe(err)
            except Exception:
                log.exception("an error observer raised")
        hooks = self._host.table.on_error
        if hooks:
            task = self._host.loop.create_task(self._run_hooks(hooks, err))
            self._hook_tasks.add(task)
            task.add_done_callback(self._hook_tasks.discard)

    async def _run_hooks(self, hooks: tuple[Route, ...], err: HandlerError) -> None:
        limit = self._host.table.options.timeout
        for hook in hooks:
            try:
                async with asyncio.timeout(limit):
                    if hook.is_async:
                        await hook.fn(err)
                    else:
                        ctx = contextvars.copy_context()
                        await self._host.loop.run_in_executor(self._executor, ctx.run, hook.fn, err)
            except Exception:  # an error in the error hook is logged, never reported again
                log.exception("error hook %s raised while handling %s", hook.name, err)

    async def drain(self) -> None:
        if self._hook_tasks:
            await asyncio.wait(set(self._hook_tasks), timeout=5.0)


class Calls:
    """Runs lane items, periodic tasks and hooks through policy and middleware."""

    def __init__(
        self,
        host: _Host,
        reporter: Reporter,
        executor: ThreadPoolExecutor,
        buckets: CooldownBuckets,
    ) -> None:
        self._host = host
        self.reporter = reporter
        self._executor = executor
        #: The cooldown windows of this run (command plans keep theirs at hand).
        self.buckets = buckets
        #: On a durable state: every lane call is claimed first (state.py).
        self.durable: Durable | None = None

    # -- lane items ------------------------------------------------------

    async def run(self, route: Route, ev: Any, payload: Any, own: bool) -> None:
        """The lane runner: one event through one route (errors reported here).

        On a durable state the call runs only under a claim (another replica's
        claim, or one finished before a restart, skips it), so that its
        answers, refusals included, are sent once; the claim's sends are
        recorded and not repeated if it runs again.
        """
        durable = self.durable
        if durable is None:
            await self._run(route, ev, payload, own)
            return
        claim = await durable.claim(route.name, ev)
        if claim is None:
            return
        token = current_claim.set(claim)
        try:
            await self._run(route, ev, payload, own)
        finally:
            current_claim.reset(token)
            await durable.finish(claim)

    async def _run(self, route: Route, ev: Any, payload: Any, own: bool) -> None:
        token = answering_self.set(True) if own else None
        ctx = payload if route.kind == "command" else None
        try:
            if payload.__class__ is Denied:
                ctx = None
                await self._answer(payload.ctx, payload.text)
            elif ctx is not None:
                await self._command(route, ev, ctx)
            else:
                await self._listener(route, ev, payload)
        except ArgumentError as exc:
            if ctx is not None:
                await self._answer(ctx, f"{exc}\nusage: {ctx.usage}")
        except SendLoopError:
            pass  # already logged as a warning by the guard
        except Exception as exc:
            log.error("handler %s raised on %s", route.name, describe(ev), exc_info=exc)
            self.reporter.failed(HandlerError(route.name, exc, event=ev, ctx=ctx, kind=route.kind))
        finally:
            if token is not None:
                answering_self.reset(token)

    def run_inline(self, route: Route, ev: Any, ctx: Context) -> str | None:
        """A command that cannot suspend, run as its chat arrives (see Route.inline_command).

        Returns the answer to queue (a refusal, an argument error, a cooldown), if any.
        """
        try:
            for check in route.checks:
                if not check(ctx):
                    return route.denied
            args: list[Any] = []
            kwargs: dict[str, Any] = {}
            sig = route.signature
            if sig is not None:
                args, kwargs = sig.bind(ctx.text)
            cd = route.cooldown
            if cd is not None:
                now = self._host.loop.time()
                c = ev.chat
                wait = self.buckets.retry_after(route, cd, c.author_id, c.channel_id, now)
                if wait:
                    template = route.cooldown_message or self._host.table.options.cooldown_message
                    return template.format(
                        command=ctx.prefix + ctx.command, seconds=seconds_text(wait)
                    )
            for _ in route.fn(ctx, *args, **kwargs).__await__():
                raise RuntimeError("an await-free handler suspended")  # cannot happen
        except ArgumentError as exc:
            return f"{exc}\nusage: {ctx.usage}"
        except SendLoopError:
            pass
        except Exception as exc:
            log.error("handler %s raised on %s", route.name, describe(ev), exc_info=exc)
            self.reporter.failed(HandlerError(route.name, exc, event=ev, ctx=ctx, kind=route.kind))
        return None

    def timed_out(self, route: Route, ev: Any, payload: Any) -> None:
        """A lane call ran past its timeout and was cancelled."""
        limit = route.limit(self._host.table.options.timeout)
        extra = "" if route.is_async else " (its thread keeps running; it cannot be killed)"
        log.error(
            "handler %s timed out after %.3g s on %s and was cancelled%s",
            route.name,
            limit,
            describe(ev),
            extra,
        )
        ctx = payload if isinstance(payload, Context) else None
        self.reporter.failed(
            HandlerError(route.name, None, event=ev, ctx=ctx, timed_out=True, kind=route.kind)
        )

    async def _command(self, route: Route, ev: Any, ctx: Context) -> None:
        if route.checks and not await passes(route.checks, ctx):
            if route.denied:
                await self._answer(ctx, route.denied)
            return
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        sig = route.signature
        if sig is not None:
            args, kwargs = sig.bind(ctx.text)
            if sig.lookups:
                args = [await self._resolve(v) for v in args]
                kwargs = {k: await self._resolve(v) for k, v in kwargs.items()}
        if route.cooldown is not None and not await self._cooled(route, ev, ctx):
            return
        first: Any = ctx if route.is_async else SyncContext(ctx, self._host.loop)
        await self._through_middleware(route, ev, ctx, (first, *args), kwargs)

    async def _listener(self, route: Route, ev: Any, match: Any) -> None:
        if route.checks and not await passes(route.checks, ev):
            return
        if route.cooldown is not None and not await self._cooled(route, ev, None):
            return
        args: tuple[Any, ...] = (ev, match) if route.pass_match else (ev,)
        if route.context_param:
            args = (*args, self.context_for(route, ev, match))
        await self._through_middleware(route, ev, None, args, {})

    def context_for(self, route: Route, ev: Event | None, match: Any = None) -> Any:
        """The context a plain ``on`` handler, periodic task or hook asked for."""
        ctx = Context(
            self._host,  # type: ignore[arg-type]
            ev,
            prefix=self._host.table.options.prefix,
            match=match,
            route=route,
        )
        return ctx if route.is_async else SyncContext(ctx, self._host.loop)

    async def _cooled(self, route: Route, ev: Any, ctx: Context | None) -> bool:
        cd = route.cooldown
        assert cd is not None
        now = self._host.loop.time()
        wait = self.buckets.retry_after(route, cd, event_author_id(ev), event_channel_id(ev), now)
        if not wait:
            return True
        if ctx is not None:
            template = route.cooldown_message or self._host.table.options.cooldown_message
            await self._answer(
                ctx, template.format(command=ctx.prefix + ctx.command, seconds=seconds_text(wait))
            )
        return False

    async def _resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [await self._resolve(v) for v in value]
        if value.__class__ is not Lookup:
            return value
        client = self._host.client
        try:
            if value.kind == "user":
                return await client.user(value.ref)
            return await client.channel(value.ref)
        except NotFound:
            raise ArgumentError(f"{value.param}: no {value.kind} {value.ref!r}") from None
        except ConcordError as exc:
            raise ArgumentError(f"{value.param}: cannot look up {value.ref!r}: {exc}") from None

    async def _answer(self, ctx: Context, text: str) -> None:
        try:
            await ctx.reply(text)
        except SendLoopError:
            pass
        except ConcordError as exc:
            log.warning("could not answer %s: %s", ctx.prefix + ctx.command, exc)

    # -- the wrapped call ------------------------------------------------

    async def _through_middleware(
        self,
        route: Route,
        ev: Any,
        ctx: Context | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        middleware = self._host.table.middleware
        if not middleware:
            await self._call(route, args, kwargs)
            return
        call = Call(route.name, ev, ctx, route.kind, route)

        def link(index: int) -> Callable[[], Awaitable[None]]:
            async def call_next() -> None:
                if index == len(middleware):
                    await self._call(route, args, kwargs)
                else:
                    await middleware[index](call, link(index + 1))

            return call_next

        await link(0)()

    async def _call(self, route: Route, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if route.is_async:
            await route.fn(*args, **kwargs)
            return
        ctx = contextvars.copy_context()
        await self._host.loop.run_in_executor(
            self._executor, lambda: ctx.run(route.fn, *args, **kwargs)
        )

    # -- periodic tasks and hooks ----------------------------------------

    async def run_plain(self, route: Route) -> BaseException | None:
        """A periodic task or hook: with the bot's timeout; errors reported (and returned)."""
        limit = route.limit(self._host.table.options.timeout)
        args = (self.context_for(route, None),) if route.context_param else ()
        try:
            async with asyncio.timeout(limit):
                if route.kind == "every":
                    await self._through_middleware(route, None, None, args, {})
                else:
                    await self._call(route, args, {})
        except TimeoutError:
            log.error(
                "%s %s timed out after %.3g s and was cancelled", route.kind, route.name, limit
            )
            self.reporter.failed(HandlerError(route.name, None, timed_out=True, kind=route.kind))
            return TimeoutError(f"{route.name} timed out after {limit} s")
        except SendLoopError:
            pass
        except Exception as exc:
            what = "periodic task" if route.kind == "every" else f"{route.kind} hook"
            log.error("%s %s raised", what, route.name, exc_info=exc)
            self.reporter.failed(HandlerError(route.name, exc, kind=route.kind))
            return exc
        return None
