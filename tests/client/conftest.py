"""Fixtures of the client library's tests (the server ones come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from concordctl import Client
from concordctl.server import EmbeddedServer
from concordctl.stream import StreamState
from tests.helpers.streams import Collector


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
