"""Helpers for the fault tests: a chat sender that bypasses the proxy, and a
collector that runs ``client.events()`` in a task and records what it saw.
"""

from __future__ import annotations

import httpx

from concordctl import protocol as p

# The collector and its checks live in tests/helpers (one for the suite).
from tests.helpers.streams import Collector, assert_exactly_once_in_order, poll_until

__all__ = [
    "DEAD_SOCKET_BOUND",
    "FAST",
    "Collector",
    "Sender",
    "assert_exactly_once_in_order",
    "poll_until",
]

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
