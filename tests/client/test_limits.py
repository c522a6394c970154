"""Hostile answers (issue 12, items 11, 12 and 14): a dripping server, endless bodies,
redirects and a server that echoes the password.

The dripping and endless servers are real sockets on 127.0.0.1 (port 0) speaking
just enough HTTP/1.1; respx stands in for a redirect and an echoing error body.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest
import respx

from concordctl import (
    ChatSent,
    Client,
    Event,
    Gap,
    NotAuthenticated,
    ProtocolViolation,
    TimedOut,
    UsageError,
)
from concordctl.config import resolve_settings
from concordctl.rest import RestClient
from concordctl.server import EmbeddedServer
from tests.helpers.timing import UNIT

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start a bare TCP server with a handler; yields its base URL."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(guarded, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


#: Both transports of the REST client: httpx's asyncio pool, and its blocking
#: one in a thread per request (the command line's, concordctl.transport).
threaded = pytest.mark.parametrize("threaded", [False, True], ids=["asyncio", "threaded"])


@threaded
async def test_a_dripping_answer_hits_the_total_deadline(
    raw_server: Callable[[Handler], Awaitable[str]], threaded: bool
) -> None:
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 100000\r\n\r\n")
        while True:  # one byte at a time, each well inside httpx's read timeout
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05 * UNIT)

    url = await raw_server(drip)
    deadline = 0.5 * UNIT
    async with RestClient(url, token="a.b.c", timeout=deadline, threaded=threaded) as rest:
        started = time.monotonic()
        with pytest.raises(TimedOut, match="did not answer within") as info:
            await rest.channels()
        elapsed = time.monotonic() - started
    assert deadline * 0.9 <= elapsed < deadline + 2 * UNIT
    assert info.value.exit_code == 124


@threaded
async def test_an_endless_body_is_cut_at_the_cap(
    raw_server: Callable[[Handler], Awaitable[str]], threaded: bool
) -> None:
    sent = 0

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Connection: close\r\n\r\n[")  # no length: read until close
        chunk = b"1," * 32768
        while True:
            writer.write(chunk)
            sent += len(chunk)
            await writer.drain()

    url = await raw_server(endless)
    async with RestClient(url, token="a.b.c", timeout=10 * UNIT, threaded=threaded) as rest:
        with pytest.raises(ProtocolViolation, match="larger than 8 MiB"):
            await rest.channels()
    assert sent < 64 * 2**20  # stopped reading soon after the cap, not at the deadline


@threaded
async def test_a_declared_huge_body_is_refused_before_reading(
    raw_server: Callable[[Handler], Awaitable[str]], threaded: bool
) -> None:
    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(60 * UNIT)

    url = await raw_server(huge)
    async with RestClient(url, token="a.b.c", timeout=5 * UNIT, threaded=threaded) as rest:
        started = time.monotonic()
        with pytest.raises(ProtocolViolation, match="larger than"):
            await rest.image(7)  # even the image cap (32 MiB) is far below
        assert time.monotonic() - started < 2 * UNIT


async def test_a_threaded_request_its_caller_gave_up_on_is_left_to_its_daemon_thread(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    answered = asyncio.Event()

    async def silent_then_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not answered.is_set():
            answered.set()
            await asyncio.sleep(60 * UNIT)  # the first request never gets an answer
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 2\r\n\r\n[]")
        await writer.drain()

    url = await raw_server(silent_then_ok)
    async with RestClient(url, token="a.b.c", timeout=30 * UNIT, threaded=True) as rest:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3 * UNIT):  # a command's deadline, say
                await rest.channels()
        assert time.monotonic() - started < 2 * UNIT  # not the request's own 30 s
        workers = [t for t in threading.enumerate() if t.name == "concordctl-http"]
        assert workers and all(t.daemon for t in workers)  # none can hold the process
        assert await rest.channels() == []  # the client still works


BASE = "http://127.0.0.1:9"


@pytest.fixture
def stub() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE + "/api", assert_all_called=False) as router:
        yield router


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_an_error_not_a_success(stub: respx.MockRouter, status: int) -> None:
    stub.delete("/chats/7").mock(
        return_value=httpx.Response(status, headers={"Location": "http://x/login?token=sekrit"})
    )
    stub.post("/chats/7/reactions").mock(return_value=httpx.Response(status))
    async with RestClient(BASE, token="a.b.c") as rest:
        with pytest.raises(ProtocolViolation, match=f"HTTP {status}") as info:
            await rest.delete_chat(7)
        assert "sekrit" not in str(info.value) and "token=***" in str(info.value)
        assert info.value.exit_code == 7
        with pytest.raises(ProtocolViolation):
            await rest.react(7, "+1")


async def test_an_echoed_password_or_token_never_reaches_a_message(
    stub: respx.MockRouter,
) -> None:
    password = 'hunter2-p\u00e4ss"word'
    echo = {"path": "/api/tokens", "status": 400, "error": "Bad Request"}
    stub.post("/tokens").mock(
        return_value=httpx.Response(
            400, json={**echo, "message": f"no user with password {password} (raw)"}
        )
    )
    async with RestClient(BASE, username="alice", password=password) as rest:
        with pytest.raises(NotAuthenticated) as info:
            await rest.login()
    text = str(info.value)
    assert "hunter2" not in text and "***" in text and "wrong username or password" in text

    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    stub.get("/self").mock(
        return_value=httpx.Response(
            403, json={**echo, "status": 403, "message": f"token {token} may not"}
        )
    )
    async with RestClient(BASE, token=token) as rest:
        with pytest.raises(Exception) as info2:
            await rest.me()
    assert token not in str(info2.value) and "***" in str(info2.value)


def test_concord_timeout_sets_the_deadline() -> None:
    env = {"CONCORD_SERVER": "http://127.0.0.1:9"}
    assert resolve_settings(env=env).timeout == 10.0
    assert resolve_settings(env={**env, "CONCORD_TIMEOUT": "2.5"}).timeout == 2.5
    assert resolve_settings(timeout=4, env={**env, "CONCORD_TIMEOUT": "2.5"}).timeout == 4
    for bad in ("soon", "0", "-1", "inf"):
        with pytest.raises(UsageError, match="CONCORD_TIMEOUT"):
            resolve_settings(env={**env, "CONCORD_TIMEOUT": bad})


async def test_the_client_passes_its_deadline_to_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORD_TIMEOUT", "3")
    async with Client(BASE, token="a.b.c") as c:
        assert c.settings.timeout == 3 and c.rest.timeout == 3


async def test_recovery_stops_at_its_limit_with_an_unrecovered_gap(
    server: EmbeddedServer, admin_password: str
) -> None:
    async with Client(server.url, username="admin", password=admin_password) as c:
        first = await c.send_chat("general", "cursor")
        sent = [await c.send_chat("general", f"missed-{i}") for i in range(8)]
        stream = c.events(since=first.id, recovery_max_chats=3, recovery_page_size=2)
        events: list[Event] = []
        async with asyncio.timeout(10 * UNIT):
            async for event in stream:
                events.append(event)
                if len(events) == 4:
                    break
        await stream.aclose()
    gap = events[0]
    assert isinstance(gap, Gap) and gap.unrecovered
    recovered = [e.chat.id for e in events[1:] if isinstance(e, ChatSent) and e.recovered]
    assert len(recovered) == 3 and set(recovered) <= {c.id for c in sent}
