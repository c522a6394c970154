"""Accounts for tests: register a user, log in, forge a token the server rejects.

One place for what tests/conftest.py's ``make_user`` fixtures, the reliability
``Sender`` and the client tests each wrote for themselves.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets

import httpx

__all__ = ["aregister", "forged_token", "login_token", "new_credentials", "register"]

_numbers = itertools.count(1)


def new_credentials(username: str | None = None) -> tuple[str, str]:
    """A fresh unique username (unless given) and a random password."""
    name = username or f"user{next(_numbers)}-{secrets.token_hex(3)}"
    return name, "pw-" + secrets.token_hex(8)


def register(url: str, username: str | None = None) -> tuple[str, str]:
    """Register a user on the server at ``url``; returns ``(username, password)``."""
    name, password = new_credentials(username)
    response = httpx.post(
        f"{url}/api/users/register", json={"username": name, "password": password}
    )
    response.raise_for_status()
    return name, password


async def aregister(url: str, username: str | None = None) -> tuple[str, str]:
    """The async twin of :func:`register`."""
    name, password = new_credentials(username)
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.post(
            "/api/users/register", json={"username": name, "password": password}
        )
        response.raise_for_status()
    return name, password


async def login_token(url: str, username: str, password: str) -> str:
    """``POST /api/tokens``: a token for the user."""
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.post("/api/tokens", json={"username": username, "password": password})
        response.raise_for_status()
        token: str = response.json()["token"]
        return token


def forged_token(exp: float, sub: str = "1") -> str:
    """A well-formed JWT the server did not sign: it answers 401 to it."""
    claims = json.dumps({"sub": sub, "exp": exp}).encode()
    payload = base64.urlsafe_b64encode(claims).decode().rstrip("=")
    return "eyJhbGciOiJIUzI1NiJ9." + payload + ".Zm9yZ2Vk"
