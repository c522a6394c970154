"""The broadcast hub: every event to every connected websocket client.

Each client has a bounded queue, so a client that stops reading never slows
anyone else down: when its queue is full it is disconnected with
:data:`SLOW_CLIENT_CODE` and a reason, and the others lose nothing.

An event is encoded once; the same text and bytes go to everyone. Queued
events are flushed once per event-loop iteration, all of a client's pending
events in one write when the connection allows it (see ``fastpath.py``);
otherwise a per-client task sends them through ASGI one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from concordctl.server.fastpath import DirectWriter

__all__ = ["SLOW_CLIENT_CODE", "SLOW_CLIENT_REASON", "Hub", "Subscriber"]

log = logging.getLogger("concordctl.server")

#: Close code for a client whose send queue overflowed (application range).
SLOW_CLIENT_CODE = 4008
SLOW_CLIENT_REASON = "too slow: send queue full, events dropped"
#: How long a close may wait for a client's buffers to drain before the socket is dropped.
DEFAULT_CLOSE_TIMEOUT = 5.0

Frame = str | bytes
#: (is_text, what ASGI sends, the UTF-8 payload)
Outgoing = tuple[bool, Frame, bytes]


def outgoing(frame: Frame) -> Outgoing:
    if isinstance(frame, str):
        return (True, frame, frame.encode("utf-8"))
    return (False, frame, frame)


class Subscriber:
    """One websocket client as the hub sees it."""

    __slots__ = (
        "_close",
        "_closing",
        "_direct",
        "_send",
        "_task",
        "_wakeup",
        "close_timeout",
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
        direct: DirectWriter | None = None,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        self.user_id = user_id
        self.close_timeout = close_timeout
        self.limit = limit
        self.queue: deque[Outgoing] = deque()
        self._send = send
        self._close = close
        self._direct = direct
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def offer(self, item: Outgoing) -> bool:
        """Queue a frame; False when the queue is full (the client is too slow)."""
        if self._closing:
            return True
        if len(self.queue) >= self.limit:
            return False
        self.queue.append(item)
        return True

    def flush(self) -> None:
        """Write what is queued now if the connection takes it; else wake the task."""
        if not self.queue or self._closing:
            return
        direct = self._direct
        if direct is not None and direct.writable and direct.usable:
            items = list(self.queue)
            self.queue.clear()
            direct.write((text, payload) for text, _, payload in items)
        else:
            self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        queue = self.queue
        direct = self._direct
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while queue:
                    if direct is not None:
                        await direct.wait_writable()  # the client's buffers drained
                        if not direct.usable:
                            return
                        self.flush()
                    else:
                        await self._send(queue.popleft()[1])
        except Exception:  # the socket went away; the receive side cleans up
            return

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
        try:
            await asyncio.wait_for(self._close(code, reason), timeout=self.close_timeout)
        except Exception:
            # The close frame could not even be queued: the client reads nothing.
            if self._direct is not None:
                self._direct.abort()

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
        self._flush_scheduled = False
        #: Called with every broadcast frame (the test harness records them here).
        self.observers: list[Callable[[Frame], None]] = []

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
        item = outgoing(frame)
        for observe in self.observers:
            observe(frame)
        for sub in self.subscribers:
            if not sub.offer(item):
                log.warning("disconnecting user %s: send queue full", sub.user_id)
                self._spawn(sub.close(SLOW_CLIENT_CODE, SLOW_CLIENT_REASON))
        if not self._flush_scheduled:
            # Everything broadcast during this loop iteration goes out together.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        for sub in list(self.subscribers):
            try:
                sub.flush()
            except Exception:  # one broken connection must not stop the others
                log.debug("flush failed for user %s", sub.user_id, exc_info=True)

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
