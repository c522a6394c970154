"""Waiters: handlers waiting for a future event (``bot.wait_for``, ``ctx.wait_for_reply``).

Every event is offered to the pending waiters before it is dispatched. A
waiter that takes a chat as its answer *consumes* it: the chat still reaches
``on`` handlers, but is not dispatched as a new command.
"""

# A wait's timeout is part of its API (`wait_for(..., timeout=30)`), as in discord.py.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from concordctl.protocol import Event, UnknownEvent

__all__ = ["Waiters"]


@dataclass(eq=False, slots=True)
class _Waiter:
    types: frozenset[str] | None  # None: any type
    predicate: Callable[[Any], bool]
    future: asyncio.Future[Event]
    consume: bool


class Waiters:
    """The pending waits of one run."""

    def __init__(self) -> None:
        #: The waits not yet answered. Changed in place, never replaced, so the
        #: feed can keep it and test it per event without a call.
        self.pending: list[_Waiter] = []

    def __len__(self) -> int:
        return len(self.pending)

    def offer(self, ev: Any) -> bool:
        """Give ``ev`` to every waiter it satisfies; True when one consumed it."""
        consumed = False
        etype = ev.type
        for w in list(self.pending):
            if w.future.done():
                self.pending.remove(w)
                continue
            if (
                w.types is not None
                and etype not in w.types
                and not (not w.types and ev.__class__ is UnknownEvent)
            ):
                continue
            try:
                ok = w.predicate(ev)
            except Exception as exc:  # a broken predicate fails its own wait, not the bot
                self.pending.remove(w)
                w.future.set_exception(exc)
                continue
            if ok:
                self.pending.remove(w)
                w.future.set_result(ev)
                consumed = consumed or w.consume
        return consumed

    async def wait(
        self,
        types: frozenset[str] | None,
        predicate: Callable[[Any], bool],
        timeout: float | None,
        *,
        consume: bool = False,
    ) -> Event:
        """The first event from now on that passes; TimeoutError after ``timeout`` seconds."""
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(types, predicate, future, consume)
        self.pending.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            if waiter in self.pending:
                self.pending.remove(waiter)

    def cancel_all(self) -> None:
        for w in self.pending:
            if not w.future.done():
                w.future.cancel()
        self.pending.clear()
