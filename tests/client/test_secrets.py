"""No token or password in any repr, log record or exception text: asserted."""

from __future__ import annotations

import asyncio
import logging
import traceback

import pytest

from concordctl import ChatSent, Client, ConcordError, NotAuthenticated
from concordctl.config import resolve_settings
from concordctl.rest import RestClient
from concordctl.server import EmbeddedServer
from tests.helpers.streams import Collector

from .conftest import FAST_STREAM


class Everything(logging.Handler):
    """Keeps every record of every logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@pytest.fixture
def everything() -> object:
    handler = Everything()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


async def test_a_full_session_leaks_no_secret(
    server: EmbeddedServer, admin_password: str, everything: Everything
) -> None:
    secrets: set[str] = {admin_password}
    shown: list[str] = []  # every repr and exception text the session produced

    async with Client(
        server.url, username="admin", password=admin_password, stream_options=FAST_STREAM
    ) as client:
        await client.me()
        assert client.token
        secrets.add(client.token)
        shown += [repr(client), repr(client.rest), repr(client.settings), str(client.settings)]
        c = Collector(client.events(on_state=lambda s: c.on_state(s))).start()
        await c.wait_connected()
        shown.append(repr(c.stream))
        await client.send_chat("general", "hello")
        await c.wait_until(lambda: c.contents() == ["hello"])
        await client.rest.recycle_token()  # a second token
        secrets.add(client.token or "")
        await server.drop_connections()  # a reconnect, logged
        await client.send_chat("general", "again")
        await c.wait_until(lambda: len(c.contents()) == 2)
        await client.typing("general")
        shown += [repr(ev) for ev in c.events if not isinstance(ev, ChatSent)]
        shown += [repr(s) for s in c.states]
        await c.stop()

    # Failures: wrong password, a rejected token on REST and on the websocket.
    errors: list[BaseException] = []
    async with RestClient(server.url, username="admin", password=admin_password + "x") as bad:
        secrets.add(admin_password + "x")
        try:
            await bad.me()
        except ConcordError as exc:
            errors.append(exc)
    issued = next(t for t in secrets if t.count(".") == 2)
    forged = issued[:-4] + "AAAA"  # a bad signature
    secrets.add(forged)
    async with Client(server.url, token=forged) as forged_client:
        for call in (forged_client.me(), _first_event(forged_client)):
            try:
                await call
            except ConcordError as exc:
                errors.append(exc)
    assert len(errors) == 3 and all(isinstance(e, NotAuthenticated) for e in errors)
    for exc in errors:
        shown.append(str(exc))
        shown.append(repr(exc))
        shown.append("".join(traceback.format_exception_only(type(exc), exc)))
    settings = resolve_settings(server.url, username="u", password=admin_password, env={})
    shown += [repr(settings), str(settings)]

    assert everything.texts, "the session logged nothing at DEBUG?"
    for secret in secrets:
        assert secret
        for text in everything.texts:
            assert secret not in text, f"secret in a log record: {text[:200]}"
        for text in shown:
            assert secret not in text, f"secret in a repr or message: {text[:200]}"
    assert any("token=***" in t for t in everything.texts)  # the ws URL was logged, redacted


async def _first_event(client: Client) -> None:
    async for _ in client.events():
        return


async def test_settings_repr_with_every_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORD_TOKEN", "env.token.value")
    monkeypatch.setenv("CONCORD_PASSWORD", "env-password-value")
    s = resolve_settings("http://h")
    assert "env.token.value" not in repr(s) and "env-password-value" not in repr(s)
    await asyncio.sleep(0)
