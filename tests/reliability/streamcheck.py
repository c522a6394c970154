"""Helpers for the fault tests: a chat sender that bypasses the proxy, and a
collector that runs ``client.events()`` in a task and records what it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from concordctl import protocol as p

# Fast keepalive and backoff, so that a test waits seconds, not minutes. The
# bound asserted for a dead socket is derived from these.
PING_INTERVAL = 0.5
PING_TIMEOUT = 0.5
FAST = {
    "ping_interval": PING_INTERVAL,
    "ping_timeout": PING_TIMEOUT,
    "open_timeout": 1.0,
    "backoff": {"base": 0.05, "cap": 0.5},
}
DEAD_SOCKET_BOUND = PING_INTERVAL + PING_TIMEOUT + 2.0  # + scheduling slack
# REST calls of the recovery may meet a dead pooled connection too: they are
# bounded by the client's timeout (then retried on a new connection).
REST_TIMEOUT = 2.0


class Sender:
    """Posts chats straight to the server (not through the proxy), in order."""

    def __init__(self, url: str, token: str, channel_id: int) -> None:
        self.http = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        self.channel_id = channel_id
        self.sent: list[p.Chat] = []

    @classmethod
    async def login(cls, url: str, username: str, password: str, channel: str) -> Sender:
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post(
                "/api/tokens", json={"username": username, "password": password}
            )
            response.raise_for_status()
            token = response.json()["token"]
            channels = await http.get("/api/channels", headers={"Authorization": f"Bearer {token}"})
            channel_id = next(c["id"] for c in channels.json() if c["name"] == channel)
        return cls(url, token, channel_id)

    async def send(self, content: str, channel_id: int | None = None) -> p.Chat:
        response = await self.http.post(
            f"/api/channels/{channel_id or self.channel_id}/chats", json={"content": content}
        )
        response.raise_for_status()
        chat = p.decode(response.content, p.Chat)
        self.sent.append(chat)
        return chat

    async def send_many(self, prefix: str, n: int) -> list[p.Chat]:
        return [await self.send(f"{prefix}-{i}") for i in range(n)]

    async def aclose(self) -> None:
        await self.http.aclose()


@dataclass
class Collector:
    """Iterates an event stream in a background task, keeping every event."""

    events: list[p.Event] = field(default_factory=list)
    states: list[tuple[float, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    error: BaseException | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_state(self, state: Any) -> None:
        self.states.append((time.monotonic(), state))
        self._changed.set()

    def start(self, stream: Any) -> None:
        async def run() -> None:
            try:
                async for event in stream:
                    self.events.append(event)
                    self._changed.set()
            except Exception as exc:
                self.error = exc
                self._changed.set()

        self.task = asyncio.get_running_loop().create_task(run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def wait_for(self, predicate: Callable[[], bool], within: float, what: str) -> float:
        """Wait until ``predicate()``; returns the time it took."""
        start = time.monotonic()
        try:
            async with asyncio.timeout(within):
                while not predicate():
                    if self.error is not None:
                        raise AssertionError(f"the stream failed: {self.error!r}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"not within {within} s: {what}; states "
                f"{[s.state for _, s in self.states]}; {len(self.chats())} chats"
            ) from None
        return time.monotonic() - start

    def chats(self, prefix: str = "") -> list[p.ChatSent]:
        return [
            e
            for e in self.events
            if isinstance(e, p.ChatSent) and e.chat.content.startswith(prefix)
        ]

    def has_chats(self, chats: list[p.Chat]) -> Callable[[], bool]:
        wanted = {c.id for c in chats}
        return lambda: wanted <= {e.chat.id for e in self.chats()}

    def state_names(self) -> list[str]:
        return [s.state for _, s in self.states]

    def first_state_after(self, name: str, moment: float) -> float | None:
        for when, state in self.states:
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
    """Wait until ``predicate()`` holds (for state that signals nothing), polling."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start
