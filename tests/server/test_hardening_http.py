"""Slowloris and web pages (issue 12, items 7 and 8): header, body and idle
timeouts, a cap on open connections, the Host check and JSON-only bodies."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from concordctl.server import EmbeddedServer, ServerConfig
from tests.helpers.timing import UNIT, async_wait_until
from tests.server.helpers import login
from tests.server.test_serve import Served

TIMEOUT = 0.5 * UNIT


@pytest.fixture
def server_config(admin_password: str) -> ServerConfig:
    return ServerConfig(
        admin_password=admin_password,
        online_delay=60,
        http_header_timeout=TIMEOUT,
        http_body_timeout=TIMEOUT,
        http_idle_timeout=1,
    )


async def _open(server: EmbeddedServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _answer(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(within):
        return await reader.read()


async def test_a_connection_that_sends_nothing_is_closed(server: EmbeddedServer) -> None:
    reader, writer = await _open(server)
    started = time.monotonic()
    try:
        data = await _answer(reader, 10 * TIMEOUT)
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started >= TIMEOUT * 0.9


async def test_headers_that_never_end_are_cut_off(server: EmbeddedServer) -> None:
    reader, writer = await _open(server)
    try:
        writer.write(b"GET /api/server HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        assert (await _answer(reader, 10 * TIMEOUT)).startswith(b"HTTP/1.1 408 ")
    finally:
        writer.close()


async def test_the_next_request_on_a_kept_alive_connection_has_a_header_deadline_too(
    server: EmbeddedServer,
) -> None:
    reader, writer = await _open(server)
    try:
        writer.write(b"GET /api/nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = await reader.readuntil(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 404 ")
        length = next(
            int(line.split(b":")[1]) for line in first.split(b"\r\n") if b"content-length" in line
        )
        await reader.readexactly(length)
        writer.write(b"GET /api/server HTTP/1.1\r\nHost: 127")
        assert (await _answer(reader, 10 * TIMEOUT)).startswith(b"HTTP/1.1 408 ")
    finally:
        writer.close()


async def test_a_body_that_trickles_gets_408_and_the_route_never_waits(
    server: EmbeddedServer, http: httpx.AsyncClient
) -> None:
    reader, writer = await _open(server)
    try:
        writer.write(
            b"POST /api/users/register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        answer = await _answer(reader, 10 * TIMEOUT)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"request body not received within" in answer
    assert (await http.get("/api/server")).status_code == 401  # still answering


async def test_hundreds_of_idle_sockets_are_closed_and_the_server_keeps_answering(
    server: EmbeddedServer, http: httpx.AsyncClient, admin_password: str
) -> None:
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(300)]
    try:
        for i, sock in enumerate(idle):
            if i % 2:
                sock.sendall(b"POST /api/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await login(http, "admin", admin_password)
        for sock in idle:
            sock.setblocking(False)

        def closed(sock: socket.socket) -> bool:
            try:
                return sock.recv(4096, socket.MSG_PEEK) == b"" or _drain(sock)
            except BlockingIOError:
                return False
            except OSError:
                return True

        await async_wait_until(
            lambda: all(closed(s) for s in idle), timeout=10 * UNIT, what="idle sockets closed"
        )
    finally:
        for sock in idle:
            sock.close()


def _drain(sock: socket.socket) -> bool:
    """Read what the server sent (a 408); True once it is followed by the end."""
    while True:
        data = sock.recv(4096)
        if not data:
            return True


async def test_connections_past_the_cap_are_refused_with_503_and_a_log_line(
    admin_password: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = ServerConfig(admin_password=admin_password, max_connections=20, online_delay=60)
    caplog.set_level(logging.WARNING, "concordctl.server")
    async with EmbeddedServer(config) as server:
        held = [await _open(server) for _ in range(20)]
        try:
            await async_wait_until(
                lambda: len(server._uvicorn.server_state.connections) == 20,  # type: ignore[union-attr]
                what="20 connections accepted",
            )
            reader, writer = await _open(server)
            answer = await _answer(reader, 5 * UNIT)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 503 ")
            assert b"too many connections" in answer
            lines = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
            assert lines and "max_connections=20" in lines[0]
        finally:
            for _, w in held:
                w.close()
        async with httpx.AsyncClient(base_url=server.url) as http:
            await async_wait_until(
                lambda: len(server._uvicorn.server_state.connections) == 0,  # type: ignore[union-attr]
                what="the held connections gone",
            )
            await login(http, "admin", admin_password)


# ---------------------------------------------------------------- item 8


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example", ""])
async def test_a_host_that_is_not_ours_is_refused(
    server: EmbeddedServer, http: httpx.AsyncClient, admin_password: str, host: str
) -> None:
    body = {"username": "admin", "password": admin_password}
    response = await http.post("/api/tokens", json=body, headers={"Host": host})
    assert response.status_code == 400
    assert "--allowed-host" in response.json()["message"]
    token = (await http.post("/api/tokens", json=body)).json()["token"]
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            f"ws://{host or '-'}/client?token={token}", host="127.0.0.1", port=server.port
        ):
            pass
    assert refused.value.response.status_code == 400


async def test_the_bound_address_localhost_and_allowed_hosts_are_served(
    admin_password: str,
) -> None:
    config = ServerConfig(
        admin_password=admin_password, allowed_hosts=("chat.example", "*.corp.example")
    )
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        body = {"username": "admin", "password": admin_password}
        for host in (
            f"127.0.0.1:{server.port}",
            f"localhost:{server.port}",
            "LOCALHOST",
            "chat.example",
            "chat.example.",
            "a.corp.example:8080",
        ):
            response = await http.post("/api/tokens", json=body, headers={"Host": host})
            assert response.status_code == 200, (host, response.text)
        assert (
            await http.post("/api/tokens", json=body, headers={"Host": "corp.example.evil"})
        ).status_code == 400
        token = (await http.post("/api/tokens", json=body)).json()["token"]
        async with connect(
            f"ws://chat.example/client?token={token}", host="127.0.0.1", port=server.port
        ) as ws:
            assert ws.protocol.state.name == "OPEN"


async def test_json_sent_as_a_simple_cross_site_post_is_refused(
    server: EmbeddedServer, http: httpx.AsyncClient, admin_password: str
) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        register = await http.post(
            "/api/users/register",
            content=b'{"username": "csrf", "password": "pw-csrf-1"}',
            headers=headers,
        )
        assert register.status_code == 415
        assert register.json()["message"] == "Content-Type must be application/json"
        login_response = await http.post(
            "/api/tokens",
            content=b'{"username": "admin", "password": "' + admin_password.encode() + b'"}',
            headers=headers,
        )
        assert login_response.status_code == 415
    assert await server.store.user_by_name("csrf") is None
    ok = await http.post(
        "/api/users/register",
        content=b'{"username": "csrf", "password": "pw-csrf-1"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200
    # An avatar is an image, not JSON: its own types still go through.
    admin = await login(http, "admin", admin_password)
    avatar = await admin.post(
        "/api/self/avatar", content=b"GIF89a", headers={"Content-Type": "image/gif"}
    )
    assert avatar.status_code == 200


def test_serve_takes_allowed_host_and_forwarded_allow_ips() -> None:
    served = Served(
        "--db",
        ":memory:",
        "--quiet",
        "--allowed-host",
        "chat.example",
        "--forwarded-allow-ips",
        "127.0.0.1",
    )
    try:
        with httpx.Client(base_url=served.url) as http:
            bad = {"username": "nobody", "password": "x"}
            assert http.get("/api/server", headers={"Host": "chat.example"}).status_code == 401
            assert http.get("/api/server", headers={"Host": "evil.example"}).status_code == 400
            # Forwarded addresses are believed from 127.0.0.1: ten failures from
            # one forwarded client lock that client out, not another one.
            for _ in range(10):
                forwarded = {"X-Forwarded-For": "203.0.113.1"}
                assert http.post("/api/tokens", json=bad, headers=forwarded).status_code == 400
            blocked = http.post("/api/tokens", json=bad, headers={"X-Forwarded-For": "203.0.113.1"})
            assert blocked.status_code == 429
            other = http.post("/api/tokens", json=bad, headers={"X-Forwarded-For": "203.0.113.2"})
            assert other.status_code == 400
    finally:
        assert served.stop() == 0
