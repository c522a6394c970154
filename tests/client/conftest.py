"""Fixtures of the client library's tests (the server ones come from tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from concordctl import Client, Event
from concordctl.server import EmbeddedServer
from concordctl.stream import EventStream, StreamState


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No test reads the user's config file or CONCORD_* environment."""
    for name in (
        "CONCORD_SERVER",
        "CONCORD_TOKEN",
        "CONCORD_USERNAME",
        "CONCORD_PASSWORD",
        "CONCORD_PROFILE",
        "CONCORD_CA_CERT",
        "SSL_CERT_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "concordctl-config.toml"
    monkeypatch.setenv("CONCORD_CONFIG", str(path))
    return path


FAST_STREAM = {
    "backoff": {"base": 0.05, "cap": 0.5},
    "ping_interval": 1.0,
    "ping_timeout": 1.0,
    "bad_frame_interval": 0.05,
}


@pytest.fixture
async def client(server: EmbeddedServer, admin_password: str) -> AsyncIterator[Client]:
    async with Client(
        server.url, username="admin", password=admin_password, stream_options=FAST_STREAM
    ) as c:
        yield c


@pytest.fixture
async def sender(
    server: EmbeddedServer, make_user: Callable[..., Awaitable[tuple[str, str]]]
) -> AsyncIterator[Client]:
    """Another user's client: the one that sends while the stream under test reads."""
    name, password = await make_user()
    async with Client(server.url, username=name, password=password) as c:
        yield c


class Collector:
    """Runs ``async for`` over a stream in a task and keeps what it yields."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.events: list[Event] = []
        self.states: list[StreamState] = []
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def on_state(self, state: StreamState) -> None:
        self.states.append(state)

    async def _run(self) -> None:
        try:
            async for ev in self.stream:
                self.events.append(ev)
                self._changed.set()
        except Exception as exc:
            self.error = exc
            self._changed.set()

    def start(self) -> Collector:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def chats(self) -> list[str]:
        return [ev.chat.content for ev in self.events if ev.type == "chat_sent"]  # type: ignore[union-attr]

    async def wait_until(self, predicate: Callable[[], bool], seconds: float = 15.0) -> None:
        async with asyncio.timeout(seconds):
            while not predicate():
                if self.error is not None:
                    raise self.error
                self._changed.clear()
                await self._changed.wait()

    async def wait_connected(self, seconds: float = 10.0) -> None:
        async with asyncio.timeout(seconds):
            while not self.stream.connected:  # noqa: ASYNC110 (no event for it)
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        await self.stream.aclose()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def collect(client: Client) -> AsyncIterator[Callable[..., Awaitable[Collector]]]:
    started: list[Collector] = []

    async def start(**kwargs: object) -> Collector:
        holder: list[Collector] = []

        def on_state(state: StreamState) -> None:
            holder[0].on_state(state)

        stream = client.events(on_state=on_state, **kwargs)  # type: ignore[arg-type]
        collector = Collector(stream)
        holder.append(collector)
        started.append(collector.start())
        await collector.wait_connected()
        return collector

    yield start
    for collector in started:
        await collector.stop()
