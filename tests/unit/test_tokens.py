"""TokenState and TokenAuth: the token lifecycle with a fake clock, no sleeping."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from concordctl.auth import TokenAuth
from concordctl.errors import NotAuthenticated
from concordctl.rest import RestClient
from concordctl.tokens import TokenState


def jwt(exp: float | None, iat: float | None = None, sub: str = "1") -> str:
    claims: dict[str, object] = {"sub": sub}
    if exp is not None:
        claims["exp"] = exp
    if iat is not None:
        claims["iat"] = iat
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_token_is_due_a_minute_before_exp_or_a_fifth_of_a_short_life() -> None:
    clock = Clock()
    state = TokenState(token=jwt(clock.now + 3600, clock.now), clock=clock)
    assert state.renew_before == 60 and not state.due()
    clock.now += 3600 - 61
    assert not state.due()
    clock.now += 2
    assert state.due() and not state.expired()
    short = TokenState(token=jwt(clock.now + 10, clock.now), clock=clock)
    assert short.renew_before == 2
    assert TokenState(token="not-a-jwt", clock=clock).due() is False


def test_next_step_before_a_request() -> None:
    clock = Clock()
    creds = TokenState(username="u", password="p", clock=clock)
    assert creds.next_step() == "login"
    creds.set(jwt(clock.now + 3600, clock.now))
    assert creds.next_step() == "use"
    clock.now += 3590
    assert creds.next_step() == "login"  # due, and credentials are there

    only = TokenState(token=jwt(clock.now + 100, clock.now), clock=clock)
    assert only.next_step() == "use"
    clock.now += 90
    assert only.next_step() == "recycle"  # due, still valid: trade it
    clock.now += 20
    assert only.next_step() == "use"  # expired: the server will say so
    with pytest.raises(NotAuthenticated, match="not logged in"):
        TokenState(clock=clock).next_step()


def test_next_step_after_a_401() -> None:
    clock = Clock()
    old = jwt(clock.now + 3600, clock.now, sub="old")
    creds = TokenState(username="u", password="p", token=old, clock=clock)
    assert creds.next_step(old, rejected=True) == "login"
    creds.set(jwt(clock.now + 3600, clock.now, sub="new"))
    assert creds.next_step(old, rejected=True) == "use"  # renewed meanwhile

    only = TokenState(token=old, clock=clock)
    with pytest.raises(NotAuthenticated, match="expired or invalid"):
        only.next_step(old, rejected=True)
    clock.now += 7200
    with pytest.raises(NotAuthenticated, match="it expired at"):
        only.next_step(old, rejected=True)


def test_no_repr_shows_a_secret() -> None:
    state = TokenState(username="u", password="hunter2", token=jwt(None))
    assert "hunter2" not in repr(state) and state.token not in repr(state)  # type: ignore[operator]


class FakeServer:
    """An httpx.MockTransport handler: issues tokens, rejects the ones it revoked."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.issued = 0
        self.valid: set[str] = set()
        self.log: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.log.append(f"{request.method} {request.url.path}")
        if request.url.path == "/api/tokens":
            self.issued += 1
            token = jwt(self.clock.now + 600, self.clock.now, sub=str(self.issued))
            self.valid.add(token)
            return httpx.Response(200, json={"token": token})
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer not in self.valid:
            return httpx.Response(401)
        return httpx.Response(200, json=[])


async def test_auth_logs_in_renews_before_expiry_and_retries_a_401_once() -> None:
    clock = Clock()
    server = FakeServer(clock)
    transport = httpx.MockTransport(server)
    async with RestClient(
        "http://concord.test", username="u", password="p", transport=transport, clock=clock
    ) as rest:
        assert await rest.channels() == []
        assert server.log == ["POST /api/tokens", "GET /api/channels"]
        first = rest.token
        await rest.channels()
        assert server.issued == 1  # still fresh: no login
        clock.now += 600 - 30  # inside the renewal margin
        await rest.channels()
        assert server.issued == 2 and rest.token != first
        server.valid.clear()  # the server forgets every token
        server.log.clear()
        await rest.channels()
        assert server.log == ["GET /api/channels", "POST /api/tokens", "GET /api/channels"]


async def test_auth_gives_up_after_one_retry() -> None:
    clock = Clock()
    server = FakeServer(clock)

    def always_401(request: httpx.Request) -> httpx.Response:
        answer = server(request)
        return answer if request.url.path == "/api/tokens" else httpx.Response(401)

    async with RestClient(
        "http://concord.test",
        username="u",
        password="p",
        transport=httpx.MockTransport(always_401),
        clock=clock,
    ) as rest:
        with pytest.raises(NotAuthenticated):
            await rest.channels()
    assert server.log.count("GET /api/channels") == 2


async def test_many_requests_due_at_once_log_in_once() -> None:
    import asyncio

    clock = Clock()
    server = FakeServer(clock)
    async with RestClient(
        "http://concord.test",
        username="u",
        password="p",
        transport=httpx.MockTransport(server),
        clock=clock,
    ) as rest:
        await asyncio.gather(*(rest.channels() for _ in range(20)))
    assert server.issued == 1


def test_token_auth_is_an_httpx_auth() -> None:
    auth = TokenAuth(TokenState(token="a.b.c"), "http://x/api")
    assert isinstance(auth, httpx.Auth)
    assert auth.renewal_request("recycle").headers["authorization"] == "Bearer a.b.c"
