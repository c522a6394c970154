"""Security of the embedded server, end to end (over sockets, and through the
CLI where a user would meet it): login rate limits, the signing key file,
body and connection caps, forged tokens, CORS, and no secret in any log line
or CLI output.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import stat
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from concordctl.server import EmbeddedServer, ServerConfig
from tests.helpers.timing import UNIT, async_wait_until

PASSWORD = "security-admin-pw-1"


async def _cli(*args: str, env: dict[str, str], stdin: bytes = b"") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "concordctl",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
    env |= {"CONCORD_CONFIG": str(tmp_path / "none.toml"), "HOME": str(tmp_path)}
    return env | {f"CONCORD_{k.upper()}": v for k, v in values.items()}


async def _login(http: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await http.post("/api/tokens", json={"username": username, "password": password})


# ------------------------------------------------------------ login limits


async def test_failed_logins_are_rate_limited_per_username(
    server: EmbeddedServer, tmp_path: Path
) -> None:
    limit = server.config.login_failures_per_user
    async with httpx.AsyncClient(base_url=server.url) as http:
        await http.post(
            "/api/users/register", json={"username": "victim", "password": "right-pw-1"}
        )
        await http.post("/api/users/register", json={"username": "other", "password": "other-pw-1"})
        for i in range(limit):
            assert (await _login(http, "victim", f"guess-{i}")).status_code == 400
        blocked = await _login(http, "victim", "guess-again")
        assert blocked.status_code == 429
        retry_after = int(blocked.headers["Retry-After"])
        assert 0 < retry_after <= server.config.login_window_seconds + 1
        # The right password is refused too: otherwise 429 vs 200 is an oracle.
        assert (await _login(http, "VICTIM", "right-pw-1")).status_code == 429
        # Another user on the same address is not locked out by the victim.
        assert (await _login(http, "other", "other-pw-1")).status_code == 200

    env = _env(tmp_path, server=server.url, username="victim", password="guess-cli")
    code, out, err = await _cli("whoami", env=env)
    assert code == 1, (code, out, err)  # RateLimited
    assert "retry" in err.lower() and "guess-cli" not in out + err


async def test_failed_logins_are_rate_limited_per_address(admin_password: str) -> None:
    config = ServerConfig(
        admin_password=admin_password, login_failures_per_address=6, login_failures_per_user=100
    )
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        for i in range(6):
            assert (await _login(http, f"nobody-{i}", "x")).status_code == 400
        blocked = await _login(http, "nobody-new", "x")
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
        assert (await _login(http, "admin", admin_password)).status_code == 429


async def test_unknown_usernames_take_as_long_as_wrong_passwords(server: EmbeddedServer) -> None:
    # A ratio measured in the same run, not an absolute time: an unknown user
    # answered without hashing would be ~50x faster and tell which exist.
    async with httpx.AsyncClient(base_url=server.url) as http:
        await _login(http, "admin", "warm-up")
        known, unknown = [], []
        for i in range(6):
            start = time.perf_counter()
            assert (await _login(http, "admin", f"wrong-{i}")).status_code in (400, 429)
            known.append(time.perf_counter() - start)
            start = time.perf_counter()
            assert (await _login(http, f"ghost-{i}", "wrong")).status_code == 400
            unknown.append(time.perf_counter() - start)
    assert statistics.median(unknown) > 0.3 * statistics.median(known), (known, unknown)


# ------------------------------------------------------------- key and files


async def test_key_and_database_files_are_private_and_survive_a_restart(
    tmp_path: Path, admin_password: str
) -> None:
    db = tmp_path / "data" / "server.db"
    db.parent.mkdir()  # --db never creates missing directories (issue 11 §3)
    old_umask = os.umask(0o022)  # a common, permissive umask
    try:
        config = ServerConfig(db_path=db, admin_password=admin_password)
        async with (
            EmbeddedServer(config) as server,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            token = (await _login(http, "admin", admin_password)).json()["token"]
    finally:
        os.umask(old_umask)
    key = db.with_name(db.name + ".jwt-key.pem")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    async with (
        EmbeddedServer(ServerConfig(db_path=db)) as again,
        httpx.AsyncClient(base_url=again.url) as http,
    ):
        # Same key after a restart: tokens issued before stay valid.
        me = await http.get("/api/self", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200


# ----------------------------------------------------------- forged tokens


@pytest.fixture
async def file_server(tmp_path: Path, admin_password: str) -> AsyncIterator[EmbeddedServer]:
    config = ServerConfig(db_path=tmp_path / "s.db", admin_password=admin_password)
    async with EmbeddedServer(config) as server:
        yield server


def _forgeries(server: EmbeddedServer, user_id: int) -> dict[str, str]:
    """Tokens a server must refuse, most of them signed with its own key."""
    key_path = Path(str(server.config.db_path) + ".jwt-key.pem")
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    good = {"sub": "admin", "id": user_id, "iat": now, "exp": now + 600, "iss": "Concord"}

    def signed(**changes: Any) -> str:
        claims = {k: v for k, v in (good | changes).items() if v is not None}
        return jwt.encode(claims, key, algorithm="RS256")  # type: ignore[arg-type]

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(good).encode()).rstrip(b"=").decode()
    valid = signed()
    return {
        "expired": signed(exp=now - 5, iat=now - 600),
        "wrong issuer": signed(iss="NotConcord"),
        "no issuer": signed(iss=None),
        "no exp": signed(exp=None),
        "no iat": signed(iat=None),
        "iat in the future": signed(iat=now + 3600, exp=now + 7200),
        "no id": signed(id=None),
        "id as text": signed(id=str(user_id)),
        "id of nobody": signed(id=user_id + 12345),
        "sub not the user's": signed(sub="someone-else"),
        "other key": jwt.encode(good, other_key, algorithm="RS256"),
        "alg none": f"{header}.{body}.",
        "HS256 with the public key": _hs256(good, public_pem),
        "signature cut": valid.rsplit(".", 1)[0] + ".",
        "signature of another token": valid.rsplit(".", 1)[0]
        + "."
        + signed(sub="x").rsplit(".", 1)[1],
        "garbage": "not.a.jwt",
        "trailing garbage": valid + "x",
    }


def _hs256(claims: dict[str, Any], secret: bytes) -> str:
    # PyJWT refuses a PEM as an HMAC secret; build the classic alg-confusion token by hand.
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(mac)


async def test_forged_expired_and_wrong_issuer_tokens_get_401(
    file_server: EmbeddedServer, admin_password: str, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=file_server.url) as http:
        good = (await _login(http, "admin", admin_password)).json()["token"]
        me = await http.get("/api/self", headers={"Authorization": f"Bearer {good}"})
        assert me.status_code == 200
        failures = []
        for name, token in _forgeries(file_server, me.json()["id"]).items():
            answer = await http.get("/api/self", headers={"Authorization": f"Bearer {token}"})
            if answer.status_code != 401 or "www-authenticate" not in answer.headers:
                failures.append(f"REST {name}: {answer.status_code}")
            ws_url = file_server.url.replace("http", "ws", 1) + "/client?token=" + token
            try:
                async with connect(ws_url, open_timeout=5):
                    failures.append(f"websocket {name}: accepted")
            except InvalidStatus as exc:
                if exc.response.status_code != 401:
                    failures.append(f"websocket {name}: {exc.response.status_code}")
        assert not failures, failures

    expired = _forgeries(file_server, me.json()["id"])["expired"]
    env = _env(tmp_path, server=file_server.url, token=expired)
    code, out, err = await _cli("whoami", env=env)
    assert code == 3, (code, out, err)
    assert expired not in out + err and "Traceback" not in err


async def test_token_with_an_id_beyond_64_bits_gets_401(
    file_server: EmbeddedServer,
) -> None:
    pem = await asyncio.to_thread(Path(str(file_server.config.db_path) + ".jwt-key.pem").read_bytes)
    key = serialization.load_pem_private_key(pem, password=None)
    now = int(time.time())
    claims = {"sub": "admin", "id": 2**70, "iat": now, "exp": now + 600, "iss": "Concord"}
    token = jwt.encode(claims, key, algorithm="RS256")  # type: ignore[arg-type]
    async with httpx.AsyncClient(base_url=file_server.url) as http:
        answer = await http.get("/api/self", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401


# ---------------------------------------------------------------- caps


@pytest.mark.slow
async def test_oversized_chats_are_refused_by_the_cli_with_one_line(
    server: EmbeddedServer, admin_password: str, tmp_path: Path
) -> None:
    env = _env(tmp_path, server=server.url, username="admin", password=admin_password)
    for size in (server.config.max_content_chars + 1, server.config.max_body_bytes * 2, 10 * 2**20):
        code, out, err = await _cli("send", "general", "-", env=env, stdin=b"x" * size)
        assert code not in (0, 1), (size, code, out, err[-300:])
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in err, err[-500:]
    async with httpx.AsyncClient(base_url=server.url) as http:
        token = (await _login(http, "admin", admin_password)).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        chats = (await http.get("/api/chats", headers=auth)).json()
        assert not chats, "an oversized chat was stored"
        channel = (await http.get("/api/channels", headers=auth)).json()[0]["id"]
        big = await http.post(
            f"/api/channels/{channel}/chats",
            content=b'{"content": "' + b"y" * 2**21 + b'"}',
            headers=auth | {"Content-Type": "application/json"},
        )
        assert big.status_code == 413


async def test_websocket_connections_per_user_are_capped(server: EmbeddedServer) -> None:
    limit = server.config.max_ws_per_user
    async with httpx.AsyncClient(base_url=server.url) as http:
        await http.post("/api/users/register", json={"username": "greedy", "password": "greedy-1"})
        token = (await _login(http, "greedy", "greedy-1")).json()["token"]
    url = server.url.replace("http", "ws", 1) + "/client?token=" + token
    sockets = [await connect(url, open_timeout=5) for _ in range(limit)]
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, open_timeout=5)
        assert refused.value.response.status_code == 429
        before = server.connected_clients()
        await sockets.pop().close()
        await async_wait_until(lambda: server.connected_clients() < before, what="a freed slot")
        sockets.append(await connect(url, open_timeout=5))  # a freed slot is usable again
    finally:
        await asyncio.gather(*(s.close() for s in sockets))


async def test_cors_is_off_by_default(server: EmbeddedServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        origin = {"Origin": "https://evil.example"}
        preflight = await http.options(
            "/api/tokens",
            headers=origin
            | {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x"},
        )
        plain = await http.get("/api/server", headers=origin)
    for response in (preflight, plain):
        assert not any(h.startswith("access-control-") for h in response.headers), response.headers


# ------------------------------------------------------- secrets in output


async def test_no_token_or_password_in_any_log_line_or_cli_output(
    admin_password: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    config = ServerConfig(admin_password=admin_password, log_requests=True, online_delay=0.1)
    secrets: list[str] = [admin_password]
    async with EmbeddedServer(config) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            token = (await _login(http, "admin", admin_password)).json()["token"]
            secrets.append(token)
            await _login(http, "admin", "wrong-password-xyz")
            secrets.append("wrong-password-xyz")
            auth = {"Authorization": f"Bearer {token}"}
            recycled = (await http.get("/api/tokens/recycle", headers=auth)).json()["token"]
            secrets.append(recycled)
            await http.get(f"/api/self?token={token}", headers=auth)
            await http.get("/api/self", headers={"Authorization": "Bearer forged.tok.en"})
        ws = server.url.replace("http", "ws", 1) + "/client?token="
        async with connect(ws + token, open_timeout=5) as sock:
            # online_delay passes: the presence change is logged and sent (waited for).
            async with asyncio.timeout(5 * UNIT):
                while json.loads(await sock.recv()).get("type") != "user_status_updated":
                    pass
            await sock.send('{"type": "chat_written", "channelId": 1, "content": "x"}')
        with pytest.raises(InvalidStatus):
            await connect(ws + "forged.tok.en", open_timeout=5)

        env = _env(tmp_path, server=server.url, token=token)
        outputs = [
            await _cli("--debug", "whoami", env=env),
            await _cli("--debug", "tail", "--timeout", "1.5", "--json", env=env),
            await _cli(
                "--debug", "whoami", env=_env(tmp_path, server=server.url, token="forged.tok.en")
            ),
            await _cli(
                "--debug",
                "whoami",
                env=_env(tmp_path, server=server.url, username="admin", password="wrong-pw-cli"),
            ),
        ]
        secrets += ["forged.tok.en", "wrong-pw-cli"]
    # The server's lines (this test's own httpx and websockets clients log
    # the URLs they are given, token included: not the server's doing).
    ours = ("httpx", "httpcore", "websockets.client")
    logged = [f"{r.name}: {r.getMessage()}" for r in caplog.records if not r.name.startswith(ours)]
    assert any("/api/self" in line for line in logged), "the access log was not captured"
    for secret in secrets:
        leaked = [line for line in logged if secret in line]
        assert not leaked, f"a secret in the server's log: {leaked[:3]}"
        for _code, out, err in outputs:
            assert secret not in out and secret not in err, f"a secret in CLI output: {err[-800:]}"
    # The signed part alone is the secret: no fragment of it either.
    signature = token.rsplit(".", 1)[1]
    assert not any(signature[:20] in line for line in logged)
