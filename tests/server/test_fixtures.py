"""The shared fixtures themselves work (other suites depend on them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from concordctl.server import EmbeddedServer, ServerThread


async def test_server_fixture_logs_in_admin(server: EmbeddedServer, admin_password: str) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    assert server.admin_password == admin_password
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(
            "/api/tokens", json={"username": "admin", "password": admin_password}
        )
        assert response.status_code == 200
        assert response.json()["token"].count(".") == 2


async def test_make_user_registers(
    server: EmbeddedServer, make_user: Callable[..., Awaitable[tuple[str, str]]]
) -> None:
    name, password = await make_user("alice")
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/api/tokens", json={"username": name, "password": password})
        assert response.status_code == 200


def test_server_thread_fixture(
    server_thread: ServerThread, make_user_sync: Callable[..., tuple[str, str]]
) -> None:
    name, password = make_user_sync()
    response = httpx.post(
        f"{server_thread.url}/api/tokens", json={"username": name, "password": password}
    )
    assert response.status_code == 200
    server_thread.refuse_connections(0.01)
    server_thread.restart()
    assert httpx.get(f"{server_thread.url}/api/self").status_code == 401
