"""Small helpers for the server's tests: log in, call the API, watch the socket."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from concordctl.server import EmbeddedServer, ServerConfig


class User:
    """A logged-in user: ``await user.get("/api/self")`` etc. return the response."""

    def __init__(self, http: httpx.AsyncClient, token: str, name: str) -> None:
        self.http = http
        self.token = token
        self.name = name
        self.id = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)

    async def send(self, channel_id: int, content: str, **extra: Any) -> dict[str, Any]:
        response = await self.post(
            f"/api/channels/{channel_id}/chats", json={"content": content, **extra}
        )
        assert response.status_code == 200, response.text
        chat: dict[str, Any] = response.json()
        return chat


async def login(http: httpx.AsyncClient, name: str, password: str) -> User:
    response = await http.post("/api/tokens", json={"username": name, "password": password})
    assert response.status_code == 200, response.text
    user = User(http, response.json()["token"], name)
    me = await user.get("/api/self")
    user.id = me.json()["id"]
    return user


async def register_and_login(http: httpx.AsyncClient, name: str, password: str = "pw") -> User:
    response = await http.post("/api/users/register", json={"username": name, "password": password})
    assert response.status_code == 200, response.text
    return await login(http, name, password)


async def general_id(user: User) -> int:
    response = await user.get("/api/server")
    value: int = response.json()["defaultChannelId"]
    return value


class Watcher:
    """A websocket client that records every frame it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.received: collections.Counter[str] = collections.Counter()  # frames per type
        self.closed: asyncio.Future[tuple[int | None, str | None]] = (
            asyncio.get_running_loop().create_future()
        )

    async def _pump(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                self.received[frame.get("type")] += 1
                self.frames.put_nowait(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result((self.ws.close_code, self.ws.close_reason))

    async def next(self, type: str | None = None, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
        """The next frame (of ``type``, skipping others such as status updates)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.frames.get()
                if type is None or frame.get("type") == type:
                    return frame

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))


@contextlib.asynccontextmanager
async def watch(server: EmbeddedServer, token: str, **kwargs: Any) -> AsyncIterator[Watcher]:
    async with websockets.connect(f"{server.ws_url}?token={token}", **kwargs) as ws:
        watcher = Watcher(ws)
        task = asyncio.create_task(watcher._pump())
        try:
            yield watcher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def running_nodes(configs: list[ServerConfig]) -> AsyncIterator[list[EmbeddedServer]]:
    """Nodes started at once, as a deploy starts them (on a new database one
    migrates and seeds, the others find it done); all stopped afterwards."""
    servers = [EmbeddedServer(config) for config in configs]
    started = await asyncio.gather(*(s.start() for s in servers), return_exceptions=True)
    try:
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        yield servers
    finally:
        await asyncio.gather(*(s.stop() for s in servers))
