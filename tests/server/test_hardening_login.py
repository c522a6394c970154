"""Login limits that cannot be bypassed with a header nor turned into a lockout,
in bounded memory (issue 12, items 5 and 6)."""

from __future__ import annotations

import secrets
import sys
import time

import httpx

from concordctl.server import EmbeddedServer, ServerConfig
from tests.helpers.timing import UNIT


async def _login(
    http: httpx.AsyncClient, username: str, password: str, forwarded_for: str | None = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return await http.post(
        "/api/tokens", json={"username": username, "password": password}, headers=headers
    )


async def _register(http: httpx.AsyncClient, username: str, password: str) -> None:
    response = await http.post(
        "/api/users/register", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text


async def test_x_forwarded_for_does_not_reset_the_address_limit(admin_password: str) -> None:
    config = ServerConfig(
        admin_password=admin_password, login_failures_per_address=5, login_failures_per_user=100
    )
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        for i in range(5):
            response = await _login(http, f"nobody-{i}", "x", forwarded_for=f"10.0.0.{i + 1}")
            assert response.status_code == 400
        # A fresh forged address changes nothing: the header is not believed.
        blocked = await _login(http, "admin", admin_password, forwarded_for="10.9.9.9")
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0


async def test_forwarded_for_is_believed_from_a_configured_proxy_only(
    admin_password: str,
) -> None:
    config = ServerConfig(
        admin_password=admin_password,
        forwarded_allow_ips=("127.0.0.1",),
        login_failures_per_user=3,
    )
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        await _register(http, "victim", "right-pw-1")
        attacker, victim = "203.0.113.9", "198.51.100.7"
        for i in range(3):
            assert (await _login(http, "victim", f"guess-{i}", attacker)).status_code == 400
        # The attacker is locked out of this account, right password or not (no oracle)...
        assert (await _login(http, "victim", "right-pw-1", attacker)).status_code == 429
        # ...the victim, from an address that has not been failing, is not.
        assert (await _login(http, "victim", "right-pw-1", victim)).status_code == 200


async def test_failures_against_other_names_do_not_lock_out_a_user_on_the_same_address(
    server: EmbeddedServer,
) -> None:
    # Every client of a loopback server shares 127.0.0.1; the old per-address
    # limit (50) locked every user out after 50 failures by anyone.
    async with httpx.AsyncClient(base_url=server.url) as http:
        await _register(http, "victim", "right-pw-1")
        for i in range(60):
            assert (await _login(http, f"spray-{i}", "x")).status_code == 400
        for i in range(server.config.login_failures_per_user - 1):
            assert (await _login(http, "admin", f"guess-{i}")).status_code == 400
        assert (await _login(http, "victim", "right-pw-1")).status_code == 200
        response = await _login(http, "admin", server.config.admin_password or "")
        assert response.status_code == 200


async def test_the_per_address_ceiling_still_stops_a_spray(admin_password: str) -> None:
    config = ServerConfig(admin_password=admin_password, login_failures_per_address=20)
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        for i in range(20):
            assert (await _login(http, f"spray-{i}", "x")).status_code == 400
        blocked = await _login(http, "admin", admin_password)
        assert blocked.status_code == 429
        assert blocked.json()["message"] == "too many failed logins; try again later"
        assert 0 < int(blocked.headers["Retry-After"]) <= config.login_window_seconds + 1


async def test_over_long_usernames_are_refused_before_the_limiter(server: EmbeddedServer) -> None:
    logins = server.state.limits.logins
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=server.url) as http:
        for _ in range(50):
            name = secrets.token_hex(30_000)  # 60 KB, unique
            response = await _login(http, name, "x")
            assert response.status_code == 400
            assert response.json()["message"] == "bad credentials"
        assert len(logins.per_user) == 0 and len(logins.per_address) == 0
        # 64 characters is the registration limit: such a name is still counted.
        assert (await _login(http, "n" * 64, "x")).status_code == 400
        assert len(logins.per_user) == 1
    # Refused unhashed: 50 scrypt hashes alone would take longer than this.
    assert time.monotonic() - started < 10 * UNIT


async def test_limiter_state_is_bounded_in_entries_and_bytes(admin_password: str) -> None:
    config = ServerConfig(
        admin_password=admin_password,
        login_tracked_keys=16,
        login_failures_per_address=1000,
        login_failures_per_user=3,
    )
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        for i in range(40):
            assert (await _login(http, f"{i:02d}" + "é" * 62, "x")).status_code == 400
        limiter = server.state.limits.logins.per_user
        assert len(limiter) == 16
        entry_bytes = [
            sys.getsizeof(key) + sys.getsizeof(times) for key, times in limiter._failures.items()
        ]
        assert max(entry_bytes) < 1024, entry_bytes
        # The newest keys are the ones kept: the latest name still counts to its limit.
        latest = "39" + "é" * 62
        for _ in range(2):
            assert (await _login(http, latest, "x")).status_code == 400
        assert (await _login(http, latest, "x")).status_code == 429
