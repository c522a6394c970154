"""Shared fixtures: a real embedded server on 127.0.0.1, port 0, in memory.

* ``server``: async; an :class:`EmbeddedServer` in the test's event loop.
* ``server_thread``: sync; a :class:`ServerThread` (for CliRunner tests).
* ``admin_password``: the seeded ``admin`` user's password on both.
* ``make_user`` (async, with ``server``) / ``make_user_sync`` (with
  ``server_thread``): register a user, return ``(username, password)``.
* ``postgres_url``: a fresh PostgreSQL database for the test (``tests/helpers/postgres.py``).
* ``server_config``: the config both use; override it in a module to change
  limits (``token_seconds=3``, ``ws_queue_size=8``...).
* ``one_signing_key`` (automatic): one RSA key for every in-process server.
* ``one_tls_context`` (automatic): one default TLS context for every httpx client.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from concordctl.server import EmbeddedServer, ServerConfig, ServerThread
from tests.helpers import TEST_PASSWORD_COST
from tests.helpers.accounts import aregister, register
from tests.helpers.postgres import postgres_spares, postgres_url

__all__ = ["postgres_spares", "postgres_url"]  # fixtures re-exported for every test module


@pytest.fixture(scope="session", autouse=True)
def one_signing_key() -> Iterator[None]:
    """The suite's in-process servers share one RSA key, as in-memory ones always do.

    Making one takes 30-200 ms, and every server on a fresh file or
    PostgreSQL database makes its own; servers started as processes still do.
    """
    from concordctl.server import auth

    key = auth.new_key()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(auth, "new_key", lambda: key)
        yield


@pytest.fixture(scope="session", autouse=True)
def one_tls_context() -> Iterator[None]:
    """httpx clients made with the default ``verify=True`` share one TLS context.

    Each new client loads certifi's CA bundle into a new context (35-50 ms),
    and the suite makes thousands (``httpx.post`` is a new client each time),
    nearly all for plain http where the context is never used. A client
    given its own ``verify=`` (a context, a file) still gets its own.
    """
    import os

    from httpx._transports import default

    made = default.create_ssl_context
    shared: dict[tuple[str | None, ...], Any] = {}

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if verify is not True or cert is not None:
            return made(verify=verify, cert=cert, trust_env=trust_env)
        # The same trust as httpx's: SSL_CERT_FILE/SSL_CERT_DIR (when trusted), else certifi.
        where = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        key = where if trust_env else (None, None)
        if key not in shared:
            shared[key] = made(verify=True, trust_env=trust_env)
        return shared[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(default, "create_ssl_context", create_ssl_context)
        yield


@pytest.fixture
def admin_password() -> str:
    return "admin-" + secrets.token_hex(8)


@pytest.fixture
def server_config(admin_password: str) -> ServerConfig:
    return ServerConfig(
        host="127.0.0.1",
        port=0,
        db_path=":memory:",
        admin_password=admin_password,
        online_delay=0.2,
        password_cost=TEST_PASSWORD_COST,
    )


@pytest.fixture
async def server(server_config: ServerConfig) -> AsyncIterator[EmbeddedServer]:
    async with EmbeddedServer(server_config) as running:
        yield running


@pytest.fixture
def server_thread(server_config: ServerConfig) -> Iterator[ServerThread]:
    with ServerThread(server_config) as running:
        yield running


@pytest.fixture
def make_user(server: EmbeddedServer) -> Callable[..., Awaitable[tuple[str, str]]]:
    async def make(username: str | None = None) -> tuple[str, str]:
        return await aregister(server.url, username)

    return make


@pytest.fixture
def make_user_sync(server_thread: ServerThread) -> Callable[..., tuple[str, str]]:
    def make(username: str | None = None) -> tuple[str, str]:
        return register(server_thread.url, username)

    return make
