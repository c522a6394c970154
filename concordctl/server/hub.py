"""The broadcast hub: every event to every connected websocket client.

Each client has a bounded queue and its own sender task, so a client that
stops reading never slows anyone else down. When a client's queue is full it
is disconnected with :data:`SLOW_CLIENT_CODE` and a reason, and the others
lose nothing. An event is encoded once and the same text goes to everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["SLOW_CLIENT_CODE", "SLOW_CLIENT_REASON", "Hub", "Subscriber"]

log = logging.getLogger("concordctl.server")

#: Close code for a client whose send queue overflowed (application range).
SLOW_CLIENT_CODE = 4008
SLOW_CLIENT_REASON = "too slow: send queue full, events dropped"

Frame = str | bytes


class Subscriber:
    """One websocket client as the hub sees it."""

    __slots__ = (
        "_close",
        "_closing",
        "_send",
        "_task",
        "_wakeup",
        "limit",
        "queue",
        "user_id",
    )

    def __init__(
        self,
        user_id: int,
        send: Callable[[Frame], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
        limit: int,
    ) -> None:
        self.user_id = user_id
        self.limit = limit
        self.queue: deque[Frame] = deque()
        self._send = send
        self._close = close
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def offer(self, frame: Frame) -> bool:
        """Queue a frame; False when the queue is full (the client is too slow)."""
        if self._closing:
            return True
        if len(self.queue) >= self.limit:
            return False
        self.queue.append(frame)
        self._wakeup.set()
        return True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        queue = self.queue
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while queue:
                await self._send(queue.popleft())

    async def close(self, code: int, reason: str) -> None:
        """Stop sending and close the socket with ``code``; bounded in time."""
        if self._closing:
            return
        self._closing = True
        self.queue.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._close(code, reason), timeout=5.0)

    @property
    def closing(self) -> bool:
        return self._closing

    async def stop(self) -> None:
        """The socket is gone: stop the sender without sending anything."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class Hub:
    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self._background: set[asyncio.Task[None]] = set()

    def add(self, sub: Subscriber) -> None:
        self.subscribers.add(sub)
        sub.start()

    async def remove(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        await sub.stop()

    def connections_of(self, user_id: int) -> int:
        return sum(1 for s in self.subscribers if s.user_id == user_id and not s.closing)

    def broadcast(self, frame: Frame) -> None:
        """Queue ``frame`` for every client; disconnect those that cannot keep up."""
        for sub in self.subscribers:
            if not sub.offer(frame):
                log.warning("disconnecting user %s: send queue full", sub.user_id)
                self._spawn(sub.close(SLOW_CLIENT_CODE, SLOW_CLIENT_REASON))

    async def close_all(self, code: int, reason: str) -> None:
        subs = list(self.subscribers)
        if subs:
            await asyncio.gather(*(s.close(code, reason) for s in subs))

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
