"""The one stream collector of the suite, and the checks made on what it collected.

``Collector`` iterates an event stream in a background task and keeps every
event and state change, waking waiters on each: tests wait on a condition
(``wait_until``), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, Callable
from typing import Any

from concordctl import protocol as p
from tests.helpers.timing import UNIT, async_wait_until

__all__ = ["Collector", "assert_exactly_once_in_order", "poll_until"]


class Collector:
    """Keeps what a stream yields (``events``) and its ``states`` (times in ``state_times``)."""

    def __init__(self, stream: AsyncIterable[p.Event] | None = None) -> None:
        self.stream = stream
        self.events: list[p.Event] = []
        self.states: list[Any] = []
        self.state_times: list[float] = []
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def on_state(self, state: Any) -> None:
        self.states.append(state)
        self.state_times.append(time.monotonic())
        self._changed.set()

    def start(self, stream: AsyncIterable[p.Event] | None = None) -> Collector:
        if stream is not None:
            self.stream = stream
        assert self.stream is not None
        source = self.stream

        async def run() -> None:
            try:
                async for event in source:
                    self.events.append(event)
                    self._changed.set()
            except Exception as exc:
                self.error = exc
                self._changed.set()

        self.task = asyncio.get_running_loop().create_task(run())
        return self

    async def stop(self) -> None:
        close = getattr(self.stream, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def wait_for(self, predicate: Callable[[], bool], within: float, what: str) -> float:
        """Wait until ``predicate()`` (``within`` seconds, scaled by UNIT); the time it took."""
        start = time.monotonic()
        try:
            async with asyncio.timeout(within * UNIT):
                while not predicate():
                    if self.error is not None:
                        raise AssertionError(f"the stream failed: {self.error!r}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"not within {within * UNIT} s: {what}; states "
                f"{self.state_names()}; {len(self.chats())} chats"
            ) from None
        return time.monotonic() - start

    async def wait_until(self, predicate: Callable[[], bool], seconds: float = 15.0) -> None:
        await self.wait_for(predicate, seconds, "the condition")

    async def wait_connected(self, seconds: float = 10.0) -> None:
        """Until the stream's socket is open (a property, so polled)."""
        stream = self.stream
        await async_wait_until(lambda: getattr(stream, "connected", False), seconds * UNIT)

    def chats(self, prefix: str = "") -> list[p.ChatSent]:
        return [
            e
            for e in self.events
            if isinstance(e, p.ChatSent) and e.chat.content.startswith(prefix)
        ]

    def contents(self, prefix: str = "") -> list[str]:
        """The contents of the chats collected, in order."""
        return [e.chat.content for e in self.chats(prefix)]

    def has_chats(self, chats: list[p.Chat]) -> Callable[[], bool]:
        wanted = {c.id for c in chats}
        return lambda: wanted <= {e.chat.id for e in self.chats()}

    def state_names(self) -> list[str]:
        return [str(s.state) for s in self.states]

    def first_state_after(self, name: str, moment: float) -> float | None:
        for when, state in zip(self.state_times, self.states, strict=True):
            if when >= moment and state.state == name:
                return when
        return None


def assert_exactly_once_in_order(collector: Collector, sent: list[p.Chat]) -> None:
    """The stream yielded each sent chat once, in the order the server stored them."""
    ids = {c.id for c in sent}
    got = [e.chat.id for e in collector.chats() if e.chat.id in ids]
    expected = [c.id for c in sent]
    duplicates = sorted({i for i in got if got.count(i) > 1})
    assert not duplicates, f"chats yielded twice: {duplicates}"
    missing = [c.content for c in sent if c.id not in set(got)]
    assert not missing, f"chats never yielded: {missing}"
    assert got == expected, "chats out of order: " + str(
        [next(c.content for c in sent if c.id == i) for i in got]
    )


async def poll_until(predicate: Callable[[], bool], within: float, what: str) -> float:
    """Wait until ``predicate()`` holds (for state that signals nothing); the time it took."""
    start = time.monotonic()
    await async_wait_until(predicate, within * UNIT, what)
    return time.monotonic() - start
