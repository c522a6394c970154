"""Helpers shared by the whole test suite (one place, imported by the tiers' conftest files)."""

from __future__ import annotations

import httpx


def admin_http(url: str, admin_password: str) -> httpx.Client:
    """An httpx client logged in as the seeded ``admin`` (channels need an admin)."""
    token = httpx.post(
        f"{url}/api/tokens", json={"username": "admin", "password": admin_password}
    ).json()["token"]
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


#: scrypt's cost for the suite's servers (``ServerConfig.password_cost``): about
#: 1 ms a hash instead of 0.1 s; tests/server/test_security.py checks the default.
TEST_PASSWORD_COST = 2**10
