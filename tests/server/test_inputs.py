"""Bad input gets a clear 4xx with the error body: never a 500, never a crash."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from concordctl.server import EmbeddedServer
from tests.server.helpers import User, general_id


def assert_4xx(response: httpx.Response, status: int = 400) -> None:
    assert response.status_code == status, (response.request.url, response.text)
    body = response.json()
    assert body["status"] == status and body["path"] == response.request.url.path
    assert body["message"]


JSON = {"Content-Type": "application/json"}  # else 415, before the body is looked at

BAD_CHAT_BODIES = [
    b"not json",
    b"",
    b"[]",
    b'{"content": 5}',
    b'{"content": null}',
    b"{}",
    b'{"content": ""}',
    b'{"content": "   "}',
    b'{"content": "x", "sentAt": "soon"}',
    b'{"content": "x", "sentAt": -1}',
    b'{"content": "x", "threadId": 1}',
    b'{"content": "x", "threadId": -3}',
    b'{"content": "x", "threadId": 99999999999999999999}',
    b'{"content": "\\u0000"}',
    b'{"content": ' + b"[" * 5000 + b"]" * 5000 + b"}",
]


async def test_bad_chat_bodies(admin: User) -> None:
    general = await general_id(admin)
    for body in BAD_CHAT_BODIES:
        response = await admin.post(
            f"/api/channels/{general}/chats",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert_4xx(response)


async def test_content_limit(server: EmbeddedServer, admin: User) -> None:
    general = await general_id(admin)
    limit = server.config.max_content_chars
    ok = await admin.post(f"/api/channels/{general}/chats", json={"content": "é" * limit})
    assert ok.status_code == 200
    assert_4xx(
        await admin.post(f"/api/channels/{general}/chats", json={"content": "é" * (limit + 1)})
    )
    chat_id = ok.json()["id"]
    assert_4xx(await admin.patch(f"/api/chats/{chat_id}", json={"content": "x" * (limit + 1)}))
    assert_4xx(await admin.patch(f"/api/chats/{chat_id}", json={"content": ""}))


async def test_request_body_cap_is_413(server: EmbeddedServer, admin: User) -> None:
    general = await general_id(admin)
    huge = b'{"content": "' + b"x" * (server.config.max_body_bytes + 10) + b'"}'
    json_type = {"Content-Type": "application/json"}
    chats = f"/api/channels/{general}/chats"
    assert_4xx(await admin.post(chats, content=huge, headers=json_type), 413)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(server.config.max_body_bytes // 1000 + 2):
            yield b"x" * 1000

    assert_4xx(await admin.post(chats, content=chunks(), headers=json_type), 413)
    avatar = b"\x89PNG" + b"\x00" * server.config.max_avatar_bytes
    assert_4xx(
        await admin.post("/api/self/avatar", content=avatar, headers={"Content-Type": "image/png"}),
        413,
    )


BAD_ID_PATHS = [
    "/api/chats/-1",
    "/api/chats/0",
    "/api/chats/abc",
    "/api/chats/9223372036854775808",
    "/api/chats/99999999999999999999999999",
    "/api/chats/1e3",
    "/api/chats/١٢",  # Arabic-Indic digits are digits to str.isdigit, not ids
    "/api/users/-5",
    "/api/channels/18446744073709551616",
    "/api/channels/x/chats/latest",
    "/api/images/-1",
]


async def test_ids_out_of_range(admin: User) -> None:
    for path in BAD_ID_PATHS:
        assert_4xx(await admin.get(path))


async def test_largest_id_is_a_clean_404(admin: User) -> None:
    assert_4xx(await admin.get("/api/chats/9223372036854775807"), 404)


BAD_SEARCHES: list[dict[str, str]] = [
    {"size": "0"},
    {"size": "-1"},
    {"size": "100000"},
    {"size": "ten"},
    {"page": "-1"},
    {"authorId": "-2"},
    {"channelId": "x"},
    {"threadId": "-2"},
    {"threadId": "0"},
    {"before": "yesterday"},
    {"after": str(2**64)},
    {"query": "q" * 1001},
]


async def test_bad_search_parameters(admin: User) -> None:
    for params in BAD_SEARCHES:
        assert_4xx(await admin.get("/api/chats", params=params))


async def test_bad_bodies_elsewhere(http: httpx.AsyncClient, admin: User) -> None:
    for path, body in [
        ("/api/tokens", b"nope"),
        ("/api/tokens", b'{"username": 1, "password": 2}'),
        ("/api/tokens", b'{"username": "admin"}'),
        ("/api/users/register", b'{"username": "", "password": "x"}'),
        ("/api/users/register", b'{"username": "a\\nb", "password": "x"}'),
        ("/api/users/register", b'{"username": "ok", "password": ""}'),
    ]:
        assert_4xx(await http.post(path, content=body, headers=JSON))
    for body in [
        b'{"name": ""}',
        b'{"name": 3}',
        b'{"name": "x", "ordinality": -1}',
        b'{"name": "x", "capabilities": "text"}',
        b'{"name": "x", "parentChannelId": -1}',
    ]:
        assert_4xx(await admin.post("/api/channels", content=body, headers=JSON))
    general = await general_id(admin)
    chat = await admin.send(general, "react")
    for body in [
        b'{"reaction": "", "adding": true}',
        b'{"reaction": "x"}',
        b'{"reaction": "x", "adding": "yes"}',
        b'{"reaction": "' + b"a" * 100 + b'", "adding": true}',
    ]:
        path = f"/api/chats/{chat['id']}/reactions"
        assert_4xx(await admin.post(path, content=body, headers=JSON))
    password = "/api/self/password"
    assert_4xx(await admin.post(password, content=b'{"newPassword": ""}', headers=JSON))
    assert_4xx(await admin.post(password, content=b"{}", headers=JSON))
