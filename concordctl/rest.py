"""The Concord REST API: one typed method per endpoint over one httpx client.

Every HTTP failure becomes an exception of :mod:`concordctl.errors` with a
one-line message (what failed, why, what to do); the mapping of statuses is
:mod:`concordctl.responses` (any answer but a 2xx is an error):

    connect, DNS, TLS          Unreachable
    past the deadline          TimedOut
    a body not of the contract ProtocolViolation (also a body past the size cap)

The pieces, one role each:

* :class:`~concordctl.auth.TokenAuth` (an ``httpx.Auth``) attaches the token,
  logs in by itself with a username and password, renews shortly before the
  token's ``exp`` and, on a 401, renews once and repeats the request. With
  only a token it renews through ``/tokens/recycle`` before ``exp`` and
  reports an expired token clearly. The decisions are
  :class:`~concordctl.tokens.TokenState`'s, without I/O.
* :class:`~concordctl.retry.RetryPolicy` says which failures are retried and
  after how long: a chat is never sent twice by a blind retry.
* :class:`~concordctl.transport.CappedTransport` caps every answer's size
  (8 MiB; images 32 MiB).
* Every request has a total deadline, ``timeout`` seconds (10 by default)
  from the first byte sent to the last byte read, retries and token renewal
  included, so a server that drips its answer cannot hang a call.

The client's own password and token never appear in a message it raises,
even when a server echoes them back.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from concordctl import protocol as p
from concordctl.backoff import Backoff
from concordctl.errors import (
    BadRequest,
    ConcordError,
    NotAuthenticated,
    NotFound,
    TimedOut,
    Unreachable,
    redact_secrets,
    redact_url,
)
from concordctl.responses import (
    MAX_BODY,
    decode_body,
    error_for_response,
    is_success,
    one_line,
    parse_retry_after,
)
from concordctl.retry import Failure, RetryPolicy
from concordctl.tokens import Step, TokenState, token_expiry

if TYPE_CHECKING:  # pragma: no cover
    # httpx (and httpcore, which its client pulls in) costs tens of ms to
    # import: it is imported by the first request, not by ``import
    # concordctl.rest``, so a stream that already has a token never pays.
    import httpx

    from concordctl.auth import TokenAuth

__all__ = ["RestClient", "error_for_response", "parse_retry_after", "token_expiry"]

log = logging.getLogger("concordctl.rest")
T = TypeVar("T")

_SAFE_METHODS = frozenset(("GET", "PATCH", "DELETE"))
#: An image may be larger than any JSON answer (the server's avatar limit is 2 MiB).
MAX_IMAGE_BODY = 32 * 2**20


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
    ``clock`` (epoch seconds) decides when the token is due: tests pass a
    fake one. ``threaded=True`` sends each request on httpx's blocking
    transport in a thread of its own (:class:`~concordctl.transport.ThreadedTransport`):
    quicker to start, for a client that lives for one command.
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
        clock: Any = None,
        threaded: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = TokenState(username=username, password=password, token=token)
        if clock is not None:
            self.tokens.clock = clock
        self.retry = RetryPolicy(max_retries, backoff or Backoff(base=0.2, cap=5.0))
        self.timeout = timeout  # the total deadline of one call, in seconds
        self._verify = verify
        self._transport = transport
        self._threaded = threaded
        self._http_client: httpx.AsyncClient | None = None
        self._auth: TokenAuth | None = None
        self._closed = False
        self._retired: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return (
            f"RestClient(base_url={redact_url(self.base_url)!r}, username={self.username!r}, "
            f"token={'***' if self.token else None})"
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

    # Kept for callers of the old attributes: both live in the retry policy now.
    @property
    def max_retries(self) -> int:
        return self.retry.max_retries

    @property
    def backoff(self) -> Backoff:
        return self.retry.backoff

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

        from concordctl.auth import TokenAuth
        from concordctl.transport import CappedTransport, ThreadedTransport

        if self._auth is None:
            self._auth = TokenAuth(self.tokens, self.base_url + "/api")
        inner = self._transport
        if inner is None and self._threaded:
            inner = ThreadedTransport(verify=self._verify)
        elif inner is None:
            inner = httpx.AsyncHTTPTransport(verify=self._verify, trust_env=False)
        return httpx.AsyncClient(
            base_url=self.base_url + "/api",
            timeout=httpx.Timeout(self.timeout),
            transport=CappedTransport(inner),
            auth=self._auth,
            headers={
                "User-Agent": "concordctl",
                "Accept": "application/json",
                # Counted bytes are kept bytes: no decompression bomb past the cap.
                "Accept-Encoding": "identity",
            },
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
                await asyncio.sleep(self.timeout + 1.0)
            finally:
                await old.aclose()

        task = asyncio.get_running_loop().create_task(retire())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    # ------------------------------------------------------------------
    # Tokens (the decisions are self.tokens', the flow is TokenAuth's)
    # ------------------------------------------------------------------

    @property
    def username(self) -> str | None:
        return self.tokens.username

    @property
    def token(self) -> str | None:
        return self.tokens.token

    @property
    def has_credentials(self) -> bool:
        return self.tokens.has_credentials

    def token_needs_renewal(self, now: float | None = None) -> bool:
        return self.tokens.due(now)

    async def login(self) -> str:
        """``POST /tokens`` with the username and password; returns the token."""
        if not self.has_credentials:
            raise NotAuthenticated(
                "cannot log in: no username and password",
                hint="pass them, set CONCORD_USERNAME and CONCORD_PASSWORD, "
                "or run 'concordctl login'",
            )
        async with self._token_auth.lock:
            await self._renew("login")
        log.info("logged in to %s as %s", redact_url(self.base_url), self.username)
        assert self.token is not None
        return self.token

    async def recycle_token(self) -> str:
        """``GET /tokens/recycle``: a fresh token for the current one."""
        async with self._token_auth.lock:
            await self._renew("recycle")
        assert self.token is not None
        return self.token

    async def renew_token(self, stale: str | None = None) -> str:
        """A new token after the server rejected ``stale`` (once for many callers).

        If another request already replaced ``stale``, the new token is
        returned without a second login; ``NotAuthenticated`` when nothing helps.
        """
        return await self._token_for(stale, rejected=True)

    async def ensure_token(self) -> str:
        """A token that is valid for a while: log in or renew when needed."""
        return await self._token_for(self.token, rejected=False)

    async def _token_for(self, stale: str | None, *, rejected: bool) -> str:
        async with self._token_auth.lock:
            step = self.tokens.next_step(stale, rejected=rejected)
            if step != "use":
                await self._renew(step, early=not rejected)
        assert self.token is not None
        return self.token

    @property
    def _token_auth(self) -> TokenAuth:
        self._http  # noqa: B018 (makes the pool, and with it the auth)
        assert self._auth is not None
        return self._auth

    async def _renew(self, step: Step, *, early: bool = False) -> None:
        """Perform a renewal step now (the caller holds the auth's lock)."""
        auth = self._token_auth
        what = f"login as {self.username!r}" if step == "login" else "renew the token"
        request = auth.renewal_request(step)
        try:
            response = await self._exchange(request, what, idempotent=step == "recycle", auth=False)
            await self._guard(auth.accept(step, response))
        except ConcordError as exc:
            if not (early and step == "recycle"):
                raise
            # Still valid for now; the server will say when it is not.
            log.warning("could not renew the token early: %s", exc)

    # ------------------------------------------------------------------
    # The one request path
    # ------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        model: type[T] | None,
        **request: Any,
    ) -> T:
        """One request (see :meth:`_request`) and its body decoded as ``model``."""
        response = await self._request(method, path, what, **request)
        if model is None:
            return None  # type: ignore[return-value]
        return decode_body(response.content, model, what, response.status_code)

    async def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        idempotent: bool | None = None,
        max_body: int | None = None,
    ) -> httpx.Response:
        """Build the request and send it (see :meth:`_exchange`): a 2xx response, read."""
        hdrs = dict(headers or {})
        if json is not None:
            content = p.encode(json)
            hdrs["Content-Type"] = "application/json"
        request = self._http.build_request(
            method,
            path,
            content=content,
            params={k: v for k, v in (params or {}).items() if v is not None},
            headers=hdrs,
            extensions={MAX_BODY: max_body} if max_body else None,
        )
        safe = method in _SAFE_METHODS if idempotent is None else idempotent
        return await self._exchange(request, what, idempotent=safe, auth=auth)

    async def _exchange(
        self, request: httpx.Request, what: str, *, idempotent: bool, auth: bool
    ) -> httpx.Response:
        """Send with retries, within the total deadline; a 2xx response, read, or an error."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._guard(self._attempts(request, what, idempotent, auth))
        except TimeoutError:
            raise TimedOut(
                f"{what} failed: {self._where()} did not answer within {self.timeout:g} s",
                hint="check the server and network, or raise --timeout / CONCORD_TIMEOUT",
            ) from None

    async def _attempts(
        self, request: httpx.Request, what: str, idempotent: bool, auth: bool
    ) -> httpx.Response:
        attempt = 0
        while True:
            response, failure, error = await self._attempt(request, what, auth)
            status = response.status_code if response is not None else None
            if response is not None and is_success(response.status_code):
                return response
            retry_after = None
            if response is not None:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            delay = self.retry.delay(
                attempt, failure, idempotent=idempotent, status=status, retry_after=retry_after
            )
            if delay is None:
                if response is None:
                    raise self._transport_error(what, failure, error, idempotent)
                raise error_for_response(
                    what,
                    response.status_code,
                    body=response.content,
                    headers=response.headers,
                    login=request.url.path.endswith("/api/tokens") and request.method == "POST",
                )
            log.info("%s: %s; retry %d in %.2f s", what, status or failure, attempt + 1, delay)
            await asyncio.sleep(delay)
            attempt += 1

    async def _attempt(
        self, request: httpx.Request, what: str, auth: bool
    ) -> tuple[httpx.Response | None, Failure, BaseException | None]:
        """One try: the response, or None, how the connection failed and why."""
        import httpx  # already loaded by self._http; a dict lookup from here on

        try:
            response = await self._http.send(request, auth=self._auth if auth else None)
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return None, "unsent", exc
        except httpx.ConnectError as exc:
            if _is_tls_failure(exc):
                raise Unreachable(
                    f"{what} failed: TLS error with {self._where()} ({one_line(str(exc), 120)})",
                    hint="for a private CA pass --ca-cert PATH (or set SSL_CERT_FILE)",
                ) from None
            return None, "unsent", exc  # never opened: nothing was sent
        except httpx.TimeoutException:
            raise TimedOut(
                f"{what} failed: {self._where()} did not answer in time",
                hint="check the server and network, or raise --timeout / CONCORD_TIMEOUT",
            ) from None
        except httpx.TransportError as exc:
            return None, "lost", exc
        return response, "status", None

    def _transport_error(
        self, what: str, failure: Failure, exc: BaseException | None, idempotent: bool
    ) -> Unreachable:
        if failure == "unsent":
            detail = one_line(str(exc), 120) if exc is not None else ""
            return Unreachable(
                f"{what} failed: cannot connect to {self._where()} "
                f"({detail or 'connection refused'})",
                hint="is the server running? check --server or CONCORD_SERVER",
            )
        maybe = "" if idempotent else "; it may or may not have been done, check first"
        return Unreachable(
            f"{what} failed: connection to {self._where()} lost ({type(exc).__name__}){maybe}",
            hint="retry when the server is reachable",
        )

    async def _guard(self, work: Awaitable[T]) -> T:
        """Await ``work``; a ConcordError out of it loses this client's password and token."""
        try:
            return await work
        except ConcordError as exc:
            secrets = (self.tokens.password, self.tokens.token)
            raise redact_secrets(exc, secrets) from None

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
        if self.tokens.password is not None:
            self.tokens.password = new_password

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
        resp = await self._request(
            "GET",
            f"/images/{int(image_id)}",
            f"get image {image_id}",
            headers={"Accept": "*/*"},
            max_body=MAX_IMAGE_BODY,
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
        self.tokens.forget()
        return True
