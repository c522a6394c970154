"""RestClient: every endpoint against the embedded server, and every error mapping.

respx stands in only where a real server cannot produce the case: a proxy's
502/503/504, a 429 with Retry-After on a GET, a truncated body, a read error.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import respx

from concordctl import protocol as p
from concordctl.backoff import Backoff
from concordctl.errors import (
    BadRequest,
    ConcordError,
    Forbidden,
    NotAuthenticated,
    NotFound,
    ProtocolViolation,
    RateLimited,
    ServerError,
    TimedOut,
    Unreachable,
)
from concordctl.rest import RestClient, error_for_response, parse_retry_after, token_expiry
from concordctl.server import EmbeddedServer
from tests.helpers.accounts import forged_token
from tests.helpers.timing import UNIT, async_wait_until

FAST = Backoff(base=0.01, cap=0.05)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture
async def rest(server: EmbeddedServer, admin_password: str) -> AsyncIterator[RestClient]:
    async with RestClient(server.url, username="admin", password=admin_password) as r:
        yield r


async def test_every_endpoint(
    rest: RestClient,
    server: EmbeddedServer,
    make_user: Callable[..., Awaitable[tuple[str, str]]],
) -> None:
    token = await rest.login()
    assert rest.token == token and token.count(".") == 2
    assert (await rest.recycle_token()) == rest.token

    reg = await rest.register("newbie", "newbie-password")
    assert isinstance(reg, p.RegisteredUser) and reg.username == "newbie"
    me = await rest.me()
    assert me.username == "admin"
    users = await rest.users()
    assert {"admin", "newbie"} <= {u.username for u in users}
    assert (await rest.user(reg.id)).username == "newbie"

    info = await rest.server()
    assert isinstance(info, p.Server) and info.default_channel_id is not None

    tree = await rest.channels()
    general = next(c for c in tree if c.name == "general")
    assert (await rest.channel(general.id)).name == "general"
    child = await rest.create_channel(
        "ops", "operations", parent_channel_id=general.id, capabilities=["text"]
    )
    assert child.parent_channel_id == general.id and child.description == "operations"

    first = await rest.send_chat(general.id, "hello", sent_at=1_700_000_000_000)
    assert first.created_at == 1_700_000_000_000 and first.content == "hello"
    second = await rest.send_chat(general.id, "deploy done")
    assert [c.id for c in await rest.latest_chats(general.id, size=2)] == [second.id, first.id]
    found = await rest.search_chats(query="deploy", channel_id=general.id)
    assert [c.id for c in found] == [second.id]
    assert [c.id for c in await rest.search_chats(after=1_700_000_000_000)] == [second.id]
    assert (await rest.chat(first.id)).content == "hello"

    edited = await rest.edit_chat(first.id, "hello!")
    assert edited.edited and edited.content == "hello!"
    await rest.react(first.id, "👍")
    await rest.react(first.id, "✔️")
    reactions = await rest.reactions(first.id)
    assert reactions.reactions == {"👍": 1, "✔️": 1}
    assert reactions.reacting_users["👍"] == [me.id]
    await rest.react(first.id, "✔️", adding=False)
    assert (await rest.reactions(first.id)).reactions == {"👍": 1}
    await rest.delete_chat(first.id)
    with pytest.raises(NotFound):
        await rest.chat(first.id)

    updated = await rest.set_avatar(PNG, "image/png")
    assert updated.profile.avatar_id is not None
    data, content_type = await rest.image(updated.profile.avatar_id)
    assert data == PNG and content_type.startswith("image/png")

    await rest.delete_channel(child.id)
    with pytest.raises(NotFound):
        await rest.channel(child.id)

    name, password = await make_user()
    async with RestClient(server.url, username=name, password=password) as user:
        await user.change_password("a-brand-new-password")
        assert (await user.me()).username == name  # the client keeps working
    async with RestClient(server.url, username=name, password="a-brand-new-password") as again:
        await again.login()
    async with RestClient(server.url, username=name, password=password) as old:
        with pytest.raises(NotAuthenticated):
            await old.login()


async def test_error_mapping_against_the_server(
    rest: RestClient,
    server: EmbeddedServer,
    make_user: Callable[..., Awaitable[tuple[str, str]]],
) -> None:
    async with RestClient(server.url, username="admin", password="wrong-password") as bad:
        with pytest.raises(NotAuthenticated) as info:
            await bad.me()
        assert info.value.exit_code == 3 and "wrong username or password" in str(info.value)
    async with RestClient(server.url) as anonymous:
        with pytest.raises(NotAuthenticated, match="not logged in"):
            await anonymous.me()
    async with RestClient(server.url, token="not.a-valid.token") as forged:
        with pytest.raises(NotAuthenticated) as info:
            await forged.me()
        assert "concordctl login" in str(info.value)
    with pytest.raises(NotFound) as nf:
        await rest.chat(12345)
    assert nf.value.exit_code == 4 and nf.value.status == 404
    with pytest.raises(NotFound):
        await rest.user(12345)
    with pytest.raises(BadRequest) as br:
        await rest.send_chat(12345, "to nowhere")
    assert br.value.exit_code == 2
    with pytest.raises(BadRequest):
        await rest.register("admin", "whatever-password")
    with pytest.raises(BadRequest, match="415"):
        await rest.set_avatar(b"text", "text/plain")

    name, password = await make_user()
    general = (await rest.channels())[0]
    mine = await rest.send_chat(general.id, "admin's")
    async with RestClient(server.url, username=name, password=password) as other:
        with pytest.raises(Forbidden) as fb:
            await other.edit_chat(mine.id, "not yours")
        assert fb.value.exit_code == 5
    for error in (nf.value, br.value, fb.value):
        assert "\n" not in str(error) and "failed" in str(error)


async def test_unreachable_and_timeout() -> None:
    # A port nothing listens on: connection refused, retried, then Unreachable.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with RestClient(f"http://127.0.0.1:{port}", token="a.b.c", backoff=FAST) as r:
        with pytest.raises(Unreachable) as info:
            await r.me()
    assert info.value.exit_code == 6 and "cannot connect" in str(info.value)

    # A server that accepts and never answers: TimedOut, not a hang.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(30)

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        async with RestClient(f"http://127.0.0.1:{port}", token="a.b.c", timeout=0.3) as r:
            with pytest.raises(TimedOut) as timed:
                await r.me()
        assert timed.value.exit_code == 124
    finally:
        srv.close()


# --------------------------------------------------------------------------
# Token renewal against the real server, with the client's clock moved instead
# of waiting (the clock is injectable; the server's stays real)
# --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def next_second(iat: float) -> None:
    """Tokens carry whole seconds: wait until one issued now differs."""
    await async_wait_until(lambda: time.time() >= iat + 1, 3 * UNIT, "the next second")


async def test_token_renewal_proactive_and_reactive(
    server: EmbeddedServer, admin_password: str
) -> None:
    clock = Clock()
    url = server.url
    async with RestClient(url, username="admin", password=admin_password, clock=clock) as r:
        first = await r.login()
        exp, iat = token_expiry(first)
        assert exp is not None and iat is not None
        await next_second(iat)  # else the server issues the very same token again
        # Proactive: inside the renewal margin the next request logs in again first.
        clock.offset = exp - time.time() - 1.0
        await r.me()
        second = r.token
        assert second is not None and second != first
    # Reactive: a token the server rejects (401) is renewed once and the request repeated.
    stale = forged_token(time.time() + 3600)
    async with RestClient(url, username="admin", password=admin_password, token=stale) as r:
        assert (await r.me()).username == "admin"
        assert r.token not in (stale, None)
    # A token-only client cannot renew a rejected token: a clear error.
    async with RestClient(url, token=stale) as only_token:
        with pytest.raises(NotAuthenticated, match="rejected the token"):
            await only_token.me()


async def test_token_only_client_recycles_before_exp(
    server: EmbeddedServer, admin_password: str
) -> None:
    async with RestClient(server.url, username="admin", password=admin_password) as r:
        token = await r.login()
    exp, iat = token_expiry(token)
    assert exp is not None and iat is not None
    await next_second(iat)
    clock = Clock()
    async with RestClient(server.url, token=token, clock=clock) as only_token:
        clock.offset = exp - time.time() - 0.3  # in the margin, before exp
        await only_token.me()
        assert only_token.token != token  # renewed through GET /tokens/recycle
        clock.offset = 0.0
        assert (await only_token.me()).username == "admin"


def test_token_expiry_reads_exp_without_verifying() -> None:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": 2000, "iat": 1000}).encode())
    token = "e30." + payload.decode().rstrip("=") + ".sig"
    assert token_expiry(token) == (2000.0, 1000.0)
    assert token_expiry("garbage") == (None, None)
    assert token_expiry("a.!!!.c") == (None, None)
    assert token_expiry("a." + base64.urlsafe_b64encode(b"[1]").decode() + ".c") == (None, None)


def test_token_is_fresh_until_its_renewal_margin() -> None:
    from concordctl.tokens import token_is_fresh

    payload = base64.urlsafe_b64encode(json.dumps({"exp": 2000, "iat": 1000}).encode())
    token = "e30." + payload.decode().rstrip("=") + ".sig"
    assert token_is_fresh(token, now=1500.0)
    assert not token_is_fresh(token, now=1941.0)  # within the last minute
    assert not token_is_fresh(token, now=2500.0)
    short = base64.urlsafe_b64encode(json.dumps({"exp": 1010, "iat": 1000}).encode())
    short_token = "e30." + short.decode().rstrip("=") + ".sig"
    assert token_is_fresh(short_token, now=1007.0)
    assert not token_is_fresh(short_token, now=1008.5)  # a fifth of a 10 s life
    assert token_is_fresh("no-exp-here")  # nothing to go by: the server will say


# --------------------------------------------------------------------------
# What only a stub can produce
# --------------------------------------------------------------------------

BASE = "http://concord.test"
CHAT = {
    "id": 7,
    "createdAt": 1,
    "authorId": 2,
    "channelId": 3,
    "threadId": None,
    "content": "x",
    "edited": False,
    "reactions": {},
}


@pytest.fixture
def stub() -> AsyncIterator[respx.MockRouter]:
    with respx.mock(base_url=BASE + "/api", assert_all_called=False) as router:
        yield router  # type: ignore[misc]


async def test_safe_requests_retry_on_502_503_504_and_429(stub: respx.MockRouter) -> None:
    route = stub.get("/chats/7").mock(
        side_effect=[
            httpx.Response(502),
            httpx.Response(503),
            httpx.Response(429, headers={"Retry-After": "0.05"}),
            httpx.Response(200, json=CHAT),
        ]
    )
    async with RestClient(BASE, token="a.b.c", backoff=FAST) as r:
        chat = await r.chat(7)
    assert chat.id == 7 and route.call_count == 4

    stub.patch("/chats/7").mock(side_effect=[httpx.Response(504), httpx.Response(200, json=CHAT)])
    stub.delete("/chats/7").mock(side_effect=[httpx.ReadError("cut"), httpx.Response(200)])
    async with RestClient(BASE, token="a.b.c", backoff=FAST) as r:
        await r.edit_chat(7, "y")
        await r.delete_chat(7)


async def test_retries_give_up_with_the_mapped_error(stub: respx.MockRouter) -> None:
    route = stub.get("/self").mock(return_value=httpx.Response(503))
    async with RestClient(BASE, token="a.b.c", backoff=FAST, max_retries=2) as r:
        with pytest.raises(ServerError) as info:
            await r.me()
    assert route.call_count == 3 and info.value.exit_code == 7


async def test_long_retry_after_is_not_waited_for(stub: respx.MockRouter) -> None:
    stub.get("/users").mock(return_value=httpx.Response(429, headers={"Retry-After": "120"}))
    async with RestClient(BASE, token="a.b.c", backoff=FAST) as r:
        with pytest.raises(RateLimited) as info:
            await r.users()
    assert info.value.retry_after == 120.0


async def test_sending_a_chat_is_never_blindly_repeated(stub: respx.MockRouter) -> None:
    route = stub.post("/channels/3/chats").mock(return_value=httpx.Response(503))
    async with RestClient(BASE, token="a.b.c", backoff=FAST) as r:
        with pytest.raises(ServerError):
            await r.send_chat(3, "once")
        assert route.call_count == 1
        route.mock(side_effect=httpx.ReadError("connection reset"))
        with pytest.raises(Unreachable, match="may or may not"):
            await r.send_chat(3, "once")
        assert route.call_count == 2
        # The connection was never opened: nothing left, so a retry is safe.
        route.mock(side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json=CHAT)])
        assert (await r.send_chat(3, "once")).id == 7
        assert route.call_count == 4
        route.mock(side_effect=httpx.ReadTimeout("slow"))
        with pytest.raises(TimedOut):
            await r.send_chat(3, "once")
        assert route.call_count == 5


async def test_bad_bodies_are_protocol_violations(stub: respx.MockRouter) -> None:
    stub.get("/chats/7").mock(return_value=httpx.Response(200, content=b'{"id": 7, "creat'))
    stub.get("/chats/8").mock(return_value=httpx.Response(200, json={"id": "eight"}))
    stub.get("/server").mock(return_value=httpx.Response(200, text="<html>proxy login</html>"))
    async with RestClient(BASE, token="a.b.c", backoff=FAST) as r:
        for call in (r.chat(7), r.chat(8), r.server()):
            with pytest.raises(ProtocolViolation) as info:
                await call
            assert info.value.exit_code == 7 and "\n" not in str(info.value)


async def test_tls_failure_is_unreachable_with_a_hint(stub: respx.MockRouter) -> None:
    import ssl

    error = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    error.__cause__ = ssl.SSLCertVerificationError("self-signed certificate")
    route = stub.get("/self").mock(side_effect=error)
    async with RestClient(BASE, token="a.b.c", backoff=FAST) as r:
        with pytest.raises(Unreachable, match="TLS") as info:
            await r.me()
    assert "--ca-cert" in str(info.value) and route.call_count == 1  # not retried


def test_error_for_response_table() -> None:
    body = b'{"path": "/api/x", "status": 404, "error": "Not Found", "message": ""}'
    cases: list[tuple[int, type[ConcordError], int]] = [
        (400, BadRequest, 2),
        (401, NotAuthenticated, 3),
        (403, Forbidden, 5),
        (404, NotFound, 4),
        (413, BadRequest, 2),
        (429, RateLimited, 1),
        (500, ServerError, 7),
        (502, ServerError, 7),
    ]
    for status, cls, code in cases:
        err = error_for_response("get x", status, body=body)
        assert type(err) is cls and err.exit_code == code and err.status == status
        assert str(err).startswith("get x failed") and "\n" not in str(err)
    login = error_for_response("login as 'a'", 400, login=True)
    assert isinstance(login, NotAuthenticated)
    limited = error_for_response("x", 429, headers={"retry-after": "3"})
    assert isinstance(limited, RateLimited) and limited.retry_after == 3.0


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    when = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    assert when == 10.0
