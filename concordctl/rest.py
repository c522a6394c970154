"""The Concord REST API: one typed method per endpoint over one httpx client.

Every HTTP failure becomes an exception of :mod:`concordctl.errors` with a
one-line message (what failed, why, what to do):

    400 on POST /tokens        NotAuthenticated (wrong username or password)
    401                        NotAuthenticated (after one renewal, if possible)
    400, 413, 415, other 4xx   BadRequest
    403 Forbidden · 404 NotFound · 429 RateLimited(retry_after) · 5xx ServerError
    connect, DNS, TLS          Unreachable
    timeout                    TimedOut
    a body not of the contract ProtocolViolation

Authentication: with a username and password the client logs in by itself,
renews the token shortly before its ``exp`` (read from the JWT without
verifying it) and, on a 401, renews once and repeats the request. With only a
token it renews through ``/tokens/recycle`` before ``exp`` and reports an
expired token clearly.

Retries: GET, PATCH, DELETE and the (idempotent) reaction POST are retried on
connection errors, 502/503/504 and 429 (honouring Retry-After) with capped
exponential backoff and jitter. Other POSTs are retried only when the
connection could not even be opened (the request was certainly not sent): a
chat is never sent twice by a blind retry.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import ssl
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

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
    redact_url,
)
from concordctl.tokens import renew_margin, token_expiry

if TYPE_CHECKING:  # pragma: no cover
    # httpx (and httpcore, which its client pulls in) costs tens of ms to
    # import: it is imported by the first request, not by ``import
    # concordctl.rest``, so a stream that already has a token never pays.
    import httpx

__all__ = ["RestClient", "error_for_response", "parse_retry_after", "token_expiry"]

log = logging.getLogger("concordctl.rest")
T = TypeVar("T")

_RETRY_STATUS = frozenset((502, 503, 504, 429))
_SAFE_METHODS = frozenset(("GET", "PATCH", "DELETE"))
# A Retry-After longer than this is not waited for: the caller gets RateLimited.
_MAX_RETRY_AFTER = 30.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_for_response(
    what: str,
    status: int,
    *,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    login: bool = False,
) -> ConcordError:
    """The exception for a failed response to ``what`` (e.g. "get chat 5")."""
    detail = ""
    if body:
        try:
            err = p.decode(body, p.ErrorBody)
            detail = _one_line(err.message or err.error or "")
        except p.FrameError:
            detail = ""
    reason = f"HTTP {status}" + (f": {detail}" if detail else "")
    if status == 400 and login:
        return NotAuthenticated(
            f"{what} failed: wrong username or password ({reason})",
            hint="check the username and CONCORD_PASSWORD, or run 'concordctl login'",
            status=status,
        )
    if status == 401:
        return NotAuthenticated(
            f"{what} failed: not authenticated ({reason})",
            hint="the token is missing or expired; run 'concordctl login' or set CONCORD_TOKEN",
            status=status,
        )
    if status == 403:
        return Forbidden(
            f"{what} failed: forbidden ({reason})",
            hint="this user may not do that (only a chat's author may edit it)",
            status=status,
        )
    if status == 404:
        return NotFound(
            f"{what} failed: not found ({reason})", hint="check the id or name", status=status
        )
    if status == 429:
        retry_after = parse_retry_after((headers or {}).get("retry-after"))
        wait = f"retry in {retry_after:.0f} s" if retry_after is not None else "retry later"
        return RateLimited(
            f"{what} failed: rate limited ({reason})",
            hint=wait,
            status=status,
            retry_after=retry_after,
        )
    if status >= 500:
        return ServerError(
            f"{what} failed: server error ({reason})",
            hint="the server failed; retry later or check its logs",
            status=status,
        )
    return BadRequest(
        f"{what} failed: the server rejected the request ({reason})",
        hint="check the arguments",
        status=status,
    )


def _is_tls_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLError | ssl.CertificateError):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSL" in type(exc).__name__


class RestClient:
    """One method per REST endpoint of the contract, returning protocol models.

    Owns one ``httpx.AsyncClient`` (one connection pool), created by the
    first request; close it with :meth:`aclose` or ``async with``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
        max_retries: int = 3,
        backoff: Backoff | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self._token: str | None = None
        self._expires_at: float | None = None
        self._renew_before = 60.0
        self._renew_lock = asyncio.Lock()
        self.max_retries = max_retries
        self.backoff = backoff or Backoff(base=0.2, cap=5.0)
        self._timeout = timeout
        self._verify = verify
        self._transport = transport
        self._http_client: httpx.AsyncClient | None = None
        self._closed = False
        self._retired: set[asyncio.Task[None]] = set()
        if token:
            self._set_token(token)

    def __repr__(self) -> str:
        return (
            f"RestClient(base_url={redact_url(self.base_url)!r}, username={self.username!r}, "
            f"token={'***' if self._token else None})"
        )

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        retired = list(self._retired)
        for task in retired:
            task.cancel()
        await asyncio.gather(*retired, return_exceptions=True)
        self._closed = True
        http, self._http_client = self._http_client, None
        if http is not None:
            await http.aclose()

    @property
    def _http(self) -> httpx.AsyncClient:
        """The connection pool, made on first use (see the import note above)."""
        if self._http_client is None:
            if self._closed:
                # As httpx says of a closed client: a new pool now would never be closed.
                raise RuntimeError("the REST client is closed")
            self._http_client = self._make_http()
        return self._http_client

    def _make_http(self) -> httpx.AsyncClient:
        import httpx

        return httpx.AsyncClient(
            base_url=self.base_url + "/api",
            timeout=httpx.Timeout(self._timeout),
            verify=self._verify,
            transport=self._transport,
            headers={"User-Agent": "concordctl", "Accept": "application/json"},
            trust_env=False,
        )

    def reset_connections(self) -> None:
        """Use fresh connections from now on (the old pool may sit on a dead path).

        Requests in flight on the old pool finish or time out; the old pool
        is closed after the request timeout.
        """
        if self._transport is not None:
            return  # a caller-provided transport (tests) is not ours to replace
        old, self._http_client = self._http_client, None
        if old is None:
            return  # no pool yet: the next request makes a fresh one anyway

        async def retire() -> None:
            try:
                await asyncio.sleep(self._timeout + 1.0)
            finally:
                await old.aclose()

        task = asyncio.get_running_loop().create_task(retire())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    # ------------------------------------------------------------------
    # Tokens
    # ------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        return self._token

    @property
    def has_credentials(self) -> bool:
        return bool(self.username and self._password)

    def _set_token(self, token: str) -> None:
        self._token = token
        exp, iat = token_expiry(token)
        self._expires_at = exp
        if exp is not None:
            self._renew_before = renew_margin(exp, iat)

    def token_needs_renewal(self, now: float | None = None) -> bool:
        if self._expires_at is None:
            return False
        return (time.time() if now is None else now) >= self._expires_at - self._renew_before

    async def login(self) -> str:
        """``POST /tokens`` with the username and password; returns the token."""
        if not self.has_credentials:
            raise NotAuthenticated(
                "cannot log in: no username and password",
                hint="pass them, set CONCORD_USERNAME and CONCORD_PASSWORD, "
                "or run 'concordctl login'",
            )
        assert self.username is not None and self._password is not None
        body = p.Credentials(username=self.username, password=self._password)
        tok = await self._call(
            "POST",
            "/tokens",
            f"login as {self.username!r}",
            p.Token,
            json=body,
            auth=False,
            login=True,
        )
        self._set_token(tok.token)
        log.info("logged in to %s as %s", redact_url(self.base_url), self.username)
        return tok.token

    async def recycle_token(self) -> str:
        """``GET /tokens/recycle``: a fresh token for the current one."""
        # With the current token as is: ensure_token() may be what called us.
        tok = await self._call(
            "GET", "/tokens/recycle", "renew the token", p.Token, bearer=self._token
        )
        self._set_token(tok.token)
        return tok.token

    async def renew_token(self, stale: str | None = None) -> str:
        """Log in again (once, even when many requests ask at the same time).

        ``stale`` is the token the caller saw rejected: if another request
        already replaced it, the new one is returned without a second login.
        """
        async with self._renew_lock:
            if self._token is not None and self._token != stale and not self.token_needs_renewal():
                return self._token
            if self.has_credentials:
                return await self.login()
            if self._token is not None and self._token == stale:
                why = "expired or invalid"
                if self._expires_at is not None and time.time() >= self._expires_at:
                    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self._expires_at))
                    why = f"it expired at {when}"
                raise NotAuthenticated(
                    f"the server rejected the token ({why})",
                    hint="run 'concordctl login' or set a fresh CONCORD_TOKEN",
                    status=401,
                )
            if self._token is not None:
                return await self.recycle_token()
            raise NotAuthenticated(
                "not logged in",
                hint="pass a username and password, set CONCORD_TOKEN, or run 'concordctl login'",
            )

    async def ensure_token(self) -> str:
        """A token that is valid for a while: log in or renew when needed."""
        tok = self._token
        if tok is None:
            return await self.renew_token(None)
        if self.token_needs_renewal():
            if self.has_credentials:
                return await self.renew_token(tok)
            if self._expires_at is not None and time.time() < self._expires_at:
                try:
                    async with self._renew_lock:
                        if self._token == tok:
                            return await self.recycle_token()
                        return self._token or tok
                except ConcordError as exc:
                    # Still valid for now; the server will say when it is not.
                    log.warning("could not renew the token early: %s", exc)
        return self._token or tok

    # ------------------------------------------------------------------
    # The one request path
    # ------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        model: type[T] | None,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        login: bool = False,
        idempotent: bool | None = None,
        bearer: str | None = None,
    ) -> T:
        resp = await self._send(
            method,
            path,
            what,
            json=json,
            params=params,
            content=content,
            headers=headers,
            auth=auth,
            login=login,
            idempotent=method in _SAFE_METHODS if idempotent is None else idempotent,
            bearer=bearer,
        )
        if model is None:
            return None  # type: ignore[return-value]
        try:
            return p.decode(resp.content, model)
        except p.FrameError as exc:
            raise ProtocolViolation(
                f"{what}: unexpected response body ({_one_line(str(exc), 160)})",
                hint="is this a Concord server? check the server URL",
                status=resp.status_code,
            ) from None

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json: Any,
        params: Mapping[str, Any] | None,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        auth: bool,
        login: bool,
        idempotent: bool,
        bearer: str | None = None,
    ) -> httpx.Response:
        import httpx  # already loaded by self._http; a dict lookup from here on

        body = p.encode(json) if json is not None else content
        hdrs = dict(headers or {})
        if json is not None:
            hdrs["Content-Type"] = "application/json"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        renewed = False
        while True:
            token = None
            if auth:
                token = bearer if bearer is not None else await self.ensure_token()
                hdrs["Authorization"] = f"Bearer {token}"
            try:
                resp = await self._http.request(
                    method, path, content=body, params=query, headers=hdrs
                )
            except httpx.TimeoutException as exc:
                connect = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
                if connect and attempt < self.max_retries:
                    attempt = await self._pause(attempt, what, "connect timeout")
                    continue
                raise TimedOut(
                    f"{what} failed: {self._where()} did not answer in time ({type(exc).__name__})",
                    hint="check the server and network, or raise the timeout",
                ) from None
            except httpx.ConnectError as exc:
                if _is_tls_failure(exc):
                    raise Unreachable(
                        f"{what} failed: TLS error with {self._where()} "
                        f"({_one_line(str(exc), 120)})",
                        hint="for a private CA pass --ca-cert PATH (or set SSL_CERT_FILE)",
                    ) from None
                # The connection was never opened: nothing was sent, any method may retry.
                if attempt < self.max_retries:
                    attempt = await self._pause(attempt, what, "connection refused")
                    continue
                raise Unreachable(
                    f"{what} failed: cannot connect to {self._where()} "
                    f"({_one_line(str(exc), 120) or 'connection refused'})",
                    hint="is the server running? check --server or CONCORD_SERVER",
                ) from None
            except httpx.TransportError as exc:
                if idempotent and attempt < self.max_retries:
                    attempt = await self._pause(attempt, what, type(exc).__name__)
                    continue
                maybe = "" if idempotent else "; it may or may not have been done, check first"
                raise Unreachable(
                    f"{what} failed: connection to {self._where()} lost "
                    f"({type(exc).__name__}){maybe}",
                    hint="retry when the server is reachable",
                ) from None

            status = resp.status_code
            if status < 400:
                return resp
            if status == 401 and auth and bearer is None and not renewed:
                renewed = True
                log.info("%s: HTTP 401, renewing the token once", what)
                await self.renew_token(token)
                continue
            if status in _RETRY_STATUS and attempt < self.max_retries and idempotent:
                retry_after = parse_retry_after(resp.headers.get("retry-after"))
                if retry_after is None or retry_after <= _MAX_RETRY_AFTER:
                    attempt = await self._pause(attempt, what, f"HTTP {status}", retry_after)
                    continue
            raise error_for_response(
                what, status, body=resp.content, headers=resp.headers, login=login
            )

    async def _pause(
        self, attempt: int, what: str, reason: str, at_least: float | None = None
    ) -> int:
        delay = self.backoff.delay(attempt)
        if at_least is not None:
            delay = max(delay, at_least)
        log.info("%s: %s; retry %d in %.2f s", what, reason, attempt + 1, delay)
        await asyncio.sleep(delay)
        return attempt + 1

    def _where(self) -> str:
        return redact_url(self.base_url)

    # ------------------------------------------------------------------
    # Endpoints (the table of the contract, in its order)
    # ------------------------------------------------------------------

    async def register(self, username: str, password: str) -> p.RegisteredUser:
        """``POST /users/register`` (no token needed)."""
        return await self._call(
            "POST",
            "/users/register",
            f"register user {username!r}",
            p.RegisteredUser,
            json=p.Credentials(username=username, password=password),
            auth=False,
        )

    async def users(self) -> list[p.FullUser]:
        return await self._call("GET", "/users", "list users", list[p.FullUser])

    async def user(self, user_id: int) -> p.FullUser:
        return await self._call("GET", f"/users/{int(user_id)}", f"get user {user_id}", p.FullUser)

    async def me(self) -> p.FullUser:
        return await self._call("GET", "/self", "get the current user", p.FullUser)

    async def change_password(self, new_password: str) -> None:
        await self._call(
            "POST",
            "/self/password",
            "change the password",
            None,
            json=p.NewPassword(new_password=new_password),
        )
        if self._password is not None:
            self._password = new_password

    async def set_avatar(self, image: bytes, content_type: str) -> p.FullUser:
        return await self._call(
            "POST",
            "/self/avatar",
            "set the avatar",
            p.FullUser,
            content=image,
            headers={"Content-Type": content_type},
        )

    async def server(self) -> p.Server:
        return await self._call("GET", "/server", "get the server info", p.Server)

    async def image(self, image_id: int) -> tuple[bytes, str]:
        """``GET /images/{id}``: the raw bytes and their content type."""
        resp = await self._send(
            "GET",
            f"/images/{int(image_id)}",
            f"get image {image_id}",
            json=None,
            params=None,
            content=None,
            headers={"Accept": "*/*"},
            auth=True,
            login=False,
            idempotent=True,
        )
        return resp.content, resp.headers.get("content-type", "application/octet-stream")

    async def channels(self) -> list[p.FullChannel]:
        return await self._call("GET", "/channels", "list channels", list[p.FullChannel])

    async def channel(self, channel_id: int) -> p.Channel:
        return await self._call(
            "GET", f"/channels/{int(channel_id)}", f"get channel {channel_id}", p.Channel
        )

    async def create_channel(
        self,
        name: str,
        description: str | None = None,
        parent_channel_id: int | None = None,
        ordinality: int | None = None,
        capabilities: list[str] | None = None,
    ) -> p.Channel:
        body = p.NewChannel(name=name)
        if description is not None:
            body.description = description
        if parent_channel_id is not None:
            body.parent_channel_id = parent_channel_id
        if ordinality is not None:
            body.ordinality = ordinality
        if capabilities is not None:
            body.capabilities = capabilities
        return await self._call(
            "POST", "/channels", f"create channel {name!r}", p.Channel, json=body
        )

    async def delete_channel(self, channel_id: int) -> None:
        await self._call(
            "DELETE", f"/channels/{int(channel_id)}", f"delete channel {channel_id}", None
        )

    async def latest_chats(self, channel_id: int, size: int = 50) -> list[p.Chat]:
        """``GET /channels/{id}/chats/latest``: newest first."""
        return await self._call(
            "GET",
            f"/channels/{int(channel_id)}/chats/latest",
            f"get the latest chats of channel {channel_id}",
            list[p.Chat],
            params={"size": size},
        )

    async def send_chat(
        self,
        channel_id: int,
        content: str,
        *,
        thread_id: int | None = None,
        sent_at: int | None = None,
    ) -> p.Chat:
        """``POST /channels/{id}/chats``. Never retried once the request may have left."""
        body = p.NewChat(content=content)
        if thread_id is not None:
            body.thread_id = thread_id
        if sent_at is not None:
            body.sent_at = sent_at
        return await self._call(
            "POST",
            f"/channels/{int(channel_id)}/chats",
            f"send a chat to channel {channel_id}",
            p.Chat,
            json=body,
        )

    async def search_chats(
        self,
        *,
        page: int = 0,
        size: int = 50,
        author_id: int | None = None,
        channel_id: int | None = None,
        thread_id: int | None = None,
        before: int | None = None,
        after: int | None = None,
        query: str | None = None,
    ) -> list[p.Chat]:
        """``GET /chats``: one page, newest first. ``thread_id=-1``: not in a thread."""
        return await self._call(
            "GET",
            "/chats",
            "search chats",
            list[p.Chat],
            params={
                "page": page,
                "size": size,
                "authorId": author_id,
                "channelId": channel_id,
                "threadId": thread_id,
                "before": before,
                "after": after,
                "query": query,
            },
        )

    async def chat(self, chat_id: int) -> p.Chat:
        return await self._call("GET", f"/chats/{int(chat_id)}", f"get chat {chat_id}", p.Chat)

    async def edit_chat(self, chat_id: int, content: str) -> p.Chat:
        return await self._call(
            "PATCH",
            f"/chats/{int(chat_id)}",
            f"edit chat {chat_id}",
            p.Chat,
            json=p.ChatEdit(content=content),
        )

    async def delete_chat(self, chat_id: int) -> None:
        await self._call("DELETE", f"/chats/{int(chat_id)}", f"delete chat {chat_id}", None)

    async def reactions(self, chat_id: int) -> p.Reactions:
        return await self._call(
            "GET",
            f"/chats/{int(chat_id)}/reactions",
            f"get reactions of chat {chat_id}",
            p.Reactions,
        )

    async def react(self, chat_id: int, reaction: str, adding: bool = True) -> None:
        """``POST /chats/{id}/reactions``; a set per reaction, so safe to repeat."""
        await self._call(
            "POST",
            f"/chats/{int(chat_id)}/reactions",
            f"{'add' if adding else 'remove'} reaction on chat {chat_id}",
            None,
            json=p.ReactionChange(reaction=reaction, adding=adding),
            idempotent=True,
        )

    # ------------------------------------------------------------------
    # concordctl's extensions (the embedded server has them; upstream may not)
    # ------------------------------------------------------------------

    async def edit_channel(
        self, channel_id: int, *, name: str | None = None, description: str | None = None
    ) -> p.Channel:
        """``PATCH /channels/{id}``: rename it or change its description (an admin's)."""
        body = p.ChannelEdit()
        if name is not None:
            body.name = name
        if description is not None:
            body.description = description
        return await self._call(
            "PATCH",
            f"/channels/{int(channel_id)}",
            f"edit channel {channel_id}",
            p.Channel,
            json=body,
        )

    async def edit_server(
        self, *, name: str | None = None, description: str | None = None
    ) -> p.Server:
        """``PATCH /server``: the server's name or description (an admin's)."""
        body = p.ServerEdit()
        if name is not None:
            body.name = name
        if description is not None:
            body.description = description
        return await self._call("PATCH", "/server", "edit the server info", p.Server, json=body)

    async def promote_user(self, username: str) -> p.PromotedUser:
        """``POST /admin/users/promote``: make ``username`` an admin (an admin's)."""
        return await self._call(
            "POST",
            "/admin/users/promote",
            f"promote user {username!r}",
            p.PromotedUser,
            json=p.Promotion(username=username),
            idempotent=True,  # promoting twice is promoting once
        )

    async def revoke_tokens(self) -> bool:
        """``DELETE /tokens``: every token of this user stops working, its sockets close.

        True when done (the client then forgets its token); False when the
        server has no such endpoint (404 or 405, as upstream Concord): the
        tokens stay valid until they expire.
        """
        try:
            await self._call("DELETE", "/tokens", "revoke the tokens", None)
        except (NotFound, BadRequest) as exc:
            if exc.status in (404, 405):
                return False
            raise
        self._token = None
        self._expires_at = None
        return True
