"""The bearer token as an ``httpx.Auth``: attach it, renew it before expiry, retry once on 401.

``TokenAuth.async_auth_flow`` is what httpx runs around every authenticated
request (as httpx's own ``DigestAuth`` does):

1. ask :meth:`TokenState.next_step <concordctl.tokens.TokenState.next_step>`
   what the token needs; if a login or a recycle, yield that request first
   and keep the token it brings;
2. yield the request with ``Authorization: Bearer ...``;
3. on a 401, ask again (``rejected=True``): a fresh login and the request
   once more, or ``NotAuthenticated`` when nothing can help.

Renewals hold one lock, so many requests that find the token due at the same
moment cause one login. The clock is the :class:`TokenState`'s, injectable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

import httpx

from concordctl import protocol as p
from concordctl.errors import ConcordError
from concordctl.responses import MAX_BODY, decode_body, error_for_response, is_success
from concordctl.tokens import Step, TokenState

__all__ = ["TokenAuth"]

log = logging.getLogger("concordctl.rest")

_TOKEN_BODY = 64 * 1024  # a token answer is a few hundred bytes


class TokenAuth(httpx.Auth):
    """See the module docstring. ``api_url`` is the server's ``.../api``."""

    requires_request_body = False
    requires_response_body = False  # the flow reads only the token answers

    def __init__(self, state: TokenState, api_url: str) -> None:
        self.state = state
        self.api_url = api_url.rstrip("/")
        self.lock = asyncio.Lock()  # one renewal at a time (see the module docstring)

    def renewal_request(self, step: Step) -> httpx.Request:
        """The request that performs ``step`` ("login" or "recycle")."""
        ext = {MAX_BODY: _TOKEN_BODY}
        if step == "login":
            state = self.state
            assert state.username is not None and state.password is not None
            body = p.encode(p.Credentials(username=state.username, password=state.password))
            return httpx.Request(
                "POST",
                f"{self.api_url}/tokens",
                content=body,
                headers={"Content-Type": "application/json"},
                extensions=ext,
            )
        return httpx.Request(
            "GET",
            f"{self.api_url}/tokens/recycle",
            headers={"Authorization": f"Bearer {self.state.token}"},
            extensions=ext,
        )

    async def accept(self, step: Step, response: httpx.Response, *, early: bool = False) -> None:
        """Keep the token of a renewal's answer, or raise its error.

        ``early``: a recycle before expiry; its failure is logged and the
        current token, still valid, kept (the server will say when it is not).
        """
        body = await response.aread()
        what = f"login as {self.state.username!r}" if step == "login" else "renew the token"
        try:
            if not is_success(response.status_code):
                raise error_for_response(
                    what,
                    response.status_code,
                    body=body,
                    headers=response.headers,
                    login=step == "login",
                )
            token = decode_body(body, p.Token, what, response.status_code).token
        except ConcordError as exc:
            if early and step == "recycle":
                log.warning("could not renew the token early: %s", exc)
                return
            raise
        self.state.set(token)
        if step == "login":
            log.info("logged in as %s", self.state.username)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        stale: str | None = None
        for rejected in (False, True):
            async with self.lock:
                step = self.state.next_step(stale, rejected=rejected)
                if step != "use":
                    answer = yield self.renewal_request(step)
                    await self.accept(step, answer, early=not rejected)
            stale = self.state.token
            request.headers["Authorization"] = f"Bearer {stale}"
            response = yield request
            if response.status_code != 401:
                return
            log.info("%s %s: HTTP 401, renewing the token once", request.method, request.url.path)
