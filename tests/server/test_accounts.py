"""Accounts: sessions a password change ends, logout everywhere, avatars, usernames.

Issue 12 items 4, 9 and 10, each a test that failed before the fix.
"""

from __future__ import annotations

import asyncio

import httpx
import websockets

from concordctl.server import EmbeddedServer, ServerConfig
from tests.helpers.timing import UNIT
from tests.server.helpers import general_id, login, register_and_login, watch

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def test_password_change_closes_the_users_sockets_with_4001(
    server: EmbeddedServer, http: httpx.AsyncClient
) -> None:
    zed = await register_and_login(http, "zed", "one")
    other = await register_and_login(http, "other")
    async with (
        watch(server, zed.token) as stolen,
        watch(server, other.token) as bystander,
    ):
        assert (
            await zed.post("/api/self/password", json={"newPassword": "two"})
        ).status_code == 200
        code, reason = await asyncio.wait_for(stolen.closed, 5 * UNIT)
        assert code == 4001 and reason == "password changed"
        # someone else's socket is untouched and still gets events
        fresh = await login(http, "zed", "two")
        chat = await fresh.send(await general_id(fresh), "after")
        assert (await bystander.next("chat_sent"))["chat"] == chat
    # the stolen token cannot open a socket again
    try:
        async with websockets.connect(f"{server.ws_url}?token={zed.token}"):
            raise AssertionError("the old token opened a socket")
    except websockets.InvalidStatus as refused:
        assert refused.response.status_code == 401


async def test_delete_tokens_logs_out_everywhere(
    server: EmbeddedServer, http: httpx.AsyncClient
) -> None:
    amy = await register_and_login(http, "amy", "pw")
    second = await login(http, "amy", "pw")
    async with watch(server, second.token) as socket:
        assert (await amy.delete("/api/tokens")).status_code == 200
        code, _ = await asyncio.wait_for(socket.closed, 5 * UNIT)
        assert code == 4001
    assert (await amy.get("/api/self")).status_code == 401
    assert (await second.get("/api/self")).status_code == 401
    assert (await http.delete("/api/tokens")).status_code == 401
    again = await login(http, "amy", "pw")
    assert (await again.get("/api/self")).status_code == 200


async def test_a_new_avatar_deletes_the_old_one(
    server: EmbeddedServer, http: httpx.AsyncClient
) -> None:
    bea = await register_and_login(http, "bea")
    headers = {"Content-Type": "image/png"}
    first = (await bea.post("/api/self/avatar", content=PNG, headers=headers)).json()
    before = await server.store.image_count()
    second = (await bea.post("/api/self/avatar", content=PNG + b"2", headers=headers)).json()
    assert await server.store.image_count() == before
    old_id, new_id = first["profile"]["avatarId"], second["profile"]["avatarId"]
    assert (await bea.get(f"/api/images/{old_id}")).status_code == 404
    assert (await bea.get(f"/api/images/{new_id}")).content == PNG + b"2"
    assert await server.store.image_bytes(bea.id) == len(PNG) + 1


async def test_avatar_uploads_have_a_budget(db: str, admin_password: str) -> None:
    config = ServerConfig(
        db_path=db, admin_password=admin_password, avatar_uploads_per_window=3,
        avatar_bytes_per_window=10 * len(PNG),
    )  # fmt: skip
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        cy = await register_and_login(http, "cy")
        headers = {"Content-Type": "image/png"}
        for _ in range(3):
            assert (
                await cy.post("/api/self/avatar", content=PNG, headers=headers)
            ).status_code == 200
        refused = await cy.post("/api/self/avatar", content=PNG, headers=headers)
        assert refused.status_code == 429 and "at most 3 uploads" in refused.json()["message"]
        # the budget is per user: someone else may still upload, but not past the byte budget
        di = await register_and_login(http, "di")
        big = PNG * 11
        refused = await di.post("/api/self/avatar", content=big, headers=headers)
        assert refused.status_code == 429 and "bytes" in refused.json()["message"]
        assert (await di.post("/api/self/avatar", content=PNG, headers=headers)).status_code == 200


async def test_usernames_are_unique_by_nfkc_casefold(http: httpx.AsyncClient) -> None:
    first = await http.post("/api/users/register", json={"username": "Ärger", "password": "pw"})
    assert first.status_code == 200
    for twin in ("ärger", "ÄRGER", "A\u0308rger"):  # the last: A + combining diaeresis
        taken = await http.post("/api/users/register", json={"username": twin, "password": "x"})
        assert taken.status_code == 400, twin
        assert taken.json()["message"] == "username taken"
    assert (
        await http.post("/api/users/register", json={"username": "ｆｕｌｌ", "password": "pw"})
    ).status_code == 200
    assert (
        await http.post("/api/users/register", json={"username": "FULL", "password": "x"})
    ).status_code == 400
    # logging in goes by the same key; the account keeps its spelling
    user = await login(http, "äRGER", "pw")
    assert (await user.get("/api/self")).json()["username"] == "Ärger"


async def test_registration_is_rate_limited_per_address(db: str, admin_password: str) -> None:
    config = ServerConfig(db_path=db, admin_password=admin_password, registrations_per_address=2)
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        for name in ("r1", "r2"):
            ok = await http.post("/api/users/register", json={"username": name, "password": "p"})
            assert ok.status_code == 200
        refused = await http.post("/api/users/register", json={"username": "r3", "password": "p"})
        assert refused.status_code == 429 and refused.headers["Retry-After"].isdigit()
        assert (await login(http, "r1", "p")).id  # logins are not affected


async def test_no_registration(db: str, admin_password: str) -> None:
    config = ServerConfig(db_path=db, admin_password=admin_password, registration=False)
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        refused = await http.post("/api/users/register", json={"username": "x", "password": "p"})
        assert refused.status_code == 403 and "registration is closed" in refused.json()["message"]
        assert (await login(http, "admin", admin_password)).id
