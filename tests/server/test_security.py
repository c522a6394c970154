"""Login rate limits, token checks, the key file, CORS, persistence."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import httpx
import jwt
import pytest

from concordctl.server import EmbeddedServer, ServerConfig
from concordctl.server.config import key_path_for
from tests.helpers import TEST_PASSWORD_COST
from tests.server.helpers import User, general_id, login, register_and_login


@pytest.fixture
def server_config(admin_password: str, db: str) -> ServerConfig:
    return ServerConfig(
        db_path=db,
        admin_password=admin_password,
        login_failures_per_user=3,
        login_failures_per_address=5,
        login_window_seconds=60,
    )


async def test_failed_logins_are_limited_per_user_then_per_address(
    http: httpx.AsyncClient, admin_password: str
) -> None:
    await register_and_login(http, "victim", "right")
    for _ in range(3):
        bad = await http.post("/api/tokens", json={"username": "victim", "password": "x"})
        assert bad.status_code == 400
    limited = await http.post("/api/tokens", json={"username": "victim", "password": "right"})
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 61
    assert limited.json()["status"] == 429
    # another user from the same address still gets in, until the address is limited
    await login(http, "admin", admin_password)
    for name in ("a", "b"):
        assert (
            await http.post("/api/tokens", json={"username": name, "password": "x"})
        ).status_code == 400
    refused = await http.post("/api/tokens", json={"username": "admin", "password": admin_password})
    assert refused.status_code == 429 and "retry-after" in refused.headers


async def test_tokens_are_fully_checked(
    server: EmbeddedServer, http: httpx.AsyncClient, admin_password: str
) -> None:
    admin = await login(http, "admin", admin_password)
    claims = jwt.decode(admin.token, options={"verify_signature": False})
    assert set(claims) == {"sub", "id", "exp", "iat", "iss", "ver"}
    assert claims["iss"] == "Concord" and claims["sub"] == "admin" and claims["id"] == admin.id
    assert claims["exp"] - claims["iat"] == 30 * 86400
    key = server.state.signer._key
    now = int(time.time())
    good = {"sub": "admin", "id": admin.id, "iat": now, "exp": now + 60, "iss": "Concord"}
    forged = [
        jwt.encode({**good, "iss": "Other"}, key, algorithm="RS256"),
        jwt.encode({k: v for k, v in good.items() if k != "id"}, key, algorithm="RS256"),
        jwt.encode({k: v for k, v in good.items() if k != "iat"}, key, algorithm="RS256"),
        jwt.encode({k: v for k, v in good.items() if k != "exp"}, key, algorithm="RS256"),
        jwt.encode({**good, "id": str(admin.id)}, key, algorithm="RS256"),
        jwt.encode({**good, "id": admin.id + 1}, key, algorithm="RS256"),
        jwt.encode({**good, "sub": "someone"}, key, algorithm="RS256"),
        jwt.encode({**good, "exp": now - 5}, key, algorithm="RS256"),
        jwt.encode(good, "a-shared-secret-of-at-least-32-bytes!!", algorithm="HS256"),
        jwt.encode(good, None, algorithm="none"),  # type: ignore[arg-type]
        "x" * 5000,
        "a.b.c",
    ]
    for token in forged:
        response = await http.get("/api/self", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401 and response.content == b""
    fine = jwt.encode(good, key, algorithm="RS256")
    assert (
        await http.get("/api/self", headers={"Authorization": f"Bearer {fine}"})
    ).status_code == 200


async def test_password_change_retires_older_tokens(
    server: EmbeddedServer, http: httpx.AsyncClient
) -> None:
    user = await register_and_login(http, "zed", "one")
    # Issued in the same second as the change below: it must not survive it either.
    same_second = (await user.get("/api/tokens/recycle")).json()["token"]
    changed = await user.post("/api/self/password", json={"newPassword": "two"})
    assert changed.status_code == 200
    for old in (user.token, same_second):
        response = await http.get("/api/self", headers={"Authorization": f"Bearer {old}"})
        assert response.status_code == 401
    fresh = await login(http, "zed", "two")
    assert (await fresh.get("/api/self")).status_code == 200
    assert jwt.decode(fresh.token, options={"verify_signature": False})["ver"] == 1


async def test_short_token_validity(admin_password: str) -> None:
    config = ServerConfig(admin_password=admin_password, token_seconds=1)
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        admin = await login(http, "admin", admin_password)
        claims = jwt.decode(admin.token, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 1


async def test_cors_is_off_unless_configured(http: httpx.AsyncClient, admin_password: str) -> None:
    origin = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    preflight = await http.options("/api/tokens", headers=origin)
    assert "access-control-allow-origin" not in preflight.headers
    config = ServerConfig(admin_password=admin_password, cors_origins=("https://app.example",))
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as other:
        allowed = await other.options(
            "/api/tokens",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"


async def test_everything_survives_a_restart_on_the_same_file(tmp_path: Path) -> None:
    db = tmp_path / "concord.db"
    config = ServerConfig(db_path=db)
    async with EmbeddedServer(config) as first:
        password = first.admin_password
        assert password
        async with httpx.AsyncClient(base_url=first.url) as http:
            admin = await login(http, "admin", password)
            general = await general_id(admin)
            bob = await register_and_login(http, "bob", "pw")
            chat = await bob.send(general, "persist me")
            await admin.post(
                f"/api/chats/{chat['id']}/reactions", json={"reaction": "✔️", "adding": True}
            )
            await bob.patch(f"/api/chats/{chat['id']}", json={"content": "persisted"})
            channel = (await admin.post("/api/channels", json={"name": "kept"})).json()
            await bob.post(
                "/api/self/avatar", content=b"GIF89a", headers={"Content-Type": "image/gif"}
            )
            before = {
                path: (await admin.get(path)).json()
                for path in [
                    "/api/server",
                    "/api/users",
                    "/api/channels",
                    f"/api/chats/{chat['id']}",
                ]
            }
    key_file = key_path_for(db)
    assert key_file is not None and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert password not in db.read_bytes().decode("latin-1")  # hashed, never in clear
    async with EmbeddedServer(ServerConfig(db_path=db)) as second:
        assert second.admin_password is None  # seeded once only
        async with httpx.AsyncClient(base_url=second.url) as http:
            same_token = User(http, admin.token, "admin")  # the key survived too
            after = {path: (await same_token.get(path)).json() for path in before}
            assert after == before
            assert (await same_token.get(f"/api/channels/{channel['id']}")).status_code == 200
            assert after[f"/api/chats/{chat['id']}"]["reactions"] == {"✔️": 1}
            newer = await same_token.send(general, "new")
            assert newer["id"] > chat["id"]
            found = await same_token.get("/api/chats", params={"query": "persisted"})
            assert [c["id"] for c in found.json()] == [chat["id"]]


async def test_passwords_are_scrypt_at_the_production_cost_unless_configured(
    tmp_path: Path,
) -> None:
    # The suite's servers hash cheaply (TEST_PASSWORD_COST); a server started
    # as users start it must not: scrypt N=2**14, r=8, stored with each hash.
    from concordctl.server import auth

    assert ServerConfig().password_cost == auth.SCRYPT_N == 2**14
    with pytest.raises(ValueError, match="power of 2"):
        ServerConfig(password_cost=1000)
    for cost in (auth.SCRYPT_N, TEST_PASSWORD_COST):
        db = tmp_path / f"cost-{cost}.db"
        async with EmbeddedServer(ServerConfig(db_path=db, password_cost=cost)) as server:
            async with httpx.AsyncClient(base_url=server.url) as http:
                await register_and_login(http, "carol", "pw-carol-1")
            stored = await server.state.store.user_by_name("carol")
            assert stored is not None
            assert stored.password_hash.split("$")[:4] == ["scrypt", str(cost), "8", "1"]
            assert auth.verify_password("pw-carol-1", stored.password_hash)
            assert not auth.verify_password("pw-carol-2", stored.password_hash)
        # a login for a name that does not exist spends a hash of the same cost
        assert auth.dummy_hash(cost).split("$")[1] == str(cost)
