"""The ASGI application: every REST endpoint of the contract and the websocket.

Handlers validate their input and answer 4xx with the contract's error body
(``{path, status, error, message}``); a 401 has an empty body and
``WWW-Authenticate: Basic realm="Realm"`` as upstream's Spring Security sends.
Every state change is broadcast through the hub, encoded once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from concordctl import protocol as p
from concordctl.errors import redact_url
from concordctl.protocol import FrameError
from concordctl.server import auth
from concordctl.server.config import ServerConfig
from concordctl.server.fastpath import DirectWriter
from concordctl.server.hub import Hub, Subscriber
from concordctl.server.store import MAX_ID, SearchFilter, Store, StoredUser, now_ms

__all__ = ["ApiError", "ServerState", "build_app"]

log = logging.getLogger("concordctl.server")
access_log = logging.getLogger("concordctl.server.access")
T = TypeVar("T")

_IMAGE_TYPES = frozenset(("image/png", "image/jpeg", "image/webp", "image/gif"))


class ApiError(Exception):
    def __init__(self, status: int, message: str = "", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class Unauthorized(ApiError):
    def __init__(self) -> None:
        super().__init__(401)


@dataclass
class ServerState:
    """Everything the handlers share; lives as long as the EmbeddedServer."""

    config: ServerConfig
    store: Store
    signer: auth.TokenSigner
    hub: Hub = field(default_factory=Hub)
    online: set[int] = field(default_factory=set)
    refuse_until: float = 0.0
    shutting_down: bool = False
    user_limiter: auth.LoginLimiter = field(init=False)
    address_limiter: auth.LoginLimiter = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        self.user_limiter = auth.LoginLimiter(c.login_failures_per_user, c.login_window_seconds)
        self.address_limiter = auth.LoginLimiter(
            c.login_failures_per_address, c.login_window_seconds
        )

    def broadcast(self, event: p.KnownEvent) -> None:
        self.hub.broadcast(p.encode_event(event).decode("utf-8"))

    def full_user(self, user: StoredUser) -> p.FullUser:
        status: p.OnlineStatus = "ONLINE" if user.id in self.online else "OFFLINE"
        return p.FullUser(
            id=user.id,
            username=user.username,
            profile=user.profile,
            status=p.UserStatus(online_status=status),
        )


# ------------------------------------------------------------------ helpers


def _json(value: Any, status: int = 200) -> Response:
    return Response(p.encode(value), status_code=status, media_type="application/json")


def _empty() -> Response:
    return Response(b"", status_code=200)


def error_response(path: str, status: int, message: str, headers: dict[str, str]) -> Response:
    if status == 401:
        return Response(
            b"", status_code=401, headers={"WWW-Authenticate": 'Basic realm="Realm"', **headers}
        )
    body = p.ErrorBody(path=path, status=status, error=HTTPStatus(status).phrase, message=message)
    return Response(
        p.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def _parse_id(text: str, what: str) -> int:
    """A positive 64-bit id from a path or query; 400 for anything else."""
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ApiError(400, f"{what} must be a positive 64-bit integer")
    value = int(text)
    if not 0 < value <= MAX_ID:
        raise ApiError(400, f"{what} must be a positive 64-bit integer")
    return value


def _check_id(value: int | None, what: str) -> None:
    if value is not None and not 0 < value <= MAX_ID:
        raise ApiError(400, f"{what} must be a positive 64-bit integer")


def _query_int(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}")
    return value


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _body(request: Request, model: type[T]) -> T:
    state: ServerState = request.app.state.concord
    raw = await _read_body(request, state.config.max_body_bytes)
    if not raw.strip():
        raise ApiError(400, "a JSON body is required")
    try:
        return p.decode(raw, model)
    except FrameError as exc:
        raise ApiError(400, str(exc)) from None


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.concord
    return state


def _token_user(state: ServerState, token: str | None) -> StoredUser | None:
    if not token:
        return None
    try:
        claims = state.signer.verify(token)
    except auth.TokenError:
        return None
    user = state.store.user(claims.user_id)
    if user is None or user.username != claims.username:
        return None
    # A password change retires the tokens issued before it.
    if claims.issued_at < user.password_changed_at:
        return None
    return user


def _authenticate(request: Request) -> StoredUser:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized()
    user = _token_user(_state(request), token.strip())
    if user is None:
        raise Unauthorized()
    return user


def _content(state: ServerState, content: str) -> str:
    if not content.strip():
        raise ApiError(400, "content must not be empty")
    if len(content) > state.config.max_content_chars:
        raise ApiError(400, f"content longer than {state.config.max_content_chars} characters")
    if "\x00" in content:
        raise ApiError(400, "content must not contain NUL characters")
    return content


Handler = Callable[[Request], Awaitable[Response]]


def _endpoint(fn: Handler) -> Handler:
    """Turn ApiError (and any bug) into the contract's error response."""

    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except ApiError as exc:
            return error_response(request.url.path, exc.status, exc.message, exc.headers)
        except Exception:
            log.exception("internal error on %s %s", request.method, request.url.path)
            return error_response(request.url.path, 500, "internal error", {})

    wrapped.__name__ = fn.__name__
    return wrapped


# ---------------------------------------------------------------- tokens


@_endpoint
async def post_token(request: Request) -> Response:
    state = _state(request)
    creds = await _body(request, p.Credentials)
    address = request.client.host if request.client else "?"
    user_key = "user:" + creds.username.casefold()
    wait = max(
        state.user_limiter.retry_after(user_key),
        state.address_limiter.retry_after("addr:" + address),
    )
    if wait > 0:
        raise ApiError(
            429, "too many failed logins; try again later", {"Retry-After": str(int(wait) + 1)}
        )
    user = state.store.user_by_name(creds.username)
    stored = user.password_hash if user else auth.DUMMY_HASH
    ok = await asyncio.to_thread(auth.verify_password, creds.password, stored)
    if user is None or not ok:
        state.user_limiter.failed(user_key)
        state.address_limiter.failed("addr:" + address)
        raise ApiError(400, "bad credentials")
    return _json(p.Token(token=state.signer.issue(user.username, user.id)))


@_endpoint
async def recycle_token(request: Request) -> Response:
    user = _authenticate(request)
    return _json(p.Token(token=_state(request).signer.issue(user.username, user.id)))


# ----------------------------------------------------------------- users


def _check_credentials(creds: p.Credentials) -> None:
    name = creds.username
    if not name or len(name) > 64 or not name.isprintable() or name != name.strip():
        raise ApiError(400, "username must be 1-64 printable characters, no outer spaces")
    if not creds.password or len(creds.password) > 1024:
        raise ApiError(400, "password must be 1-1024 characters")


@_endpoint
async def register(request: Request) -> Response:
    state = _state(request)
    creds = await _body(request, p.Credentials)
    _check_credentials(creds)
    hashed = await asyncio.to_thread(auth.hash_password, creds.password)
    user = state.store.add_user(creds.username, hashed)
    if user is None:
        raise ApiError(400, "username taken")
    state.broadcast(p.UserJoined(user_id=user.id))
    return _json(p.RegisteredUser(id=user.id, username=user.username))


@_endpoint
async def list_users(request: Request) -> Response:
    _authenticate(request)
    state = _state(request)
    return _json([state.full_user(u) for u in state.store.users()])


@_endpoint
async def get_user(request: Request) -> Response:
    _authenticate(request)
    state = _state(request)
    user = state.store.user(_parse_id(request.path_params["user_id"], "userId"))
    if user is None:
        raise ApiError(404, "no such user")
    return _json(state.full_user(user))


@_endpoint
async def get_self(request: Request) -> Response:
    user = _authenticate(request)
    return _json(_state(request).full_user(user))


@_endpoint
async def set_password(request: Request) -> Response:
    user = _authenticate(request)
    state = _state(request)
    body = await _body(request, p.NewPassword)
    if not body.new_password or len(body.new_password) > 1024:
        raise ApiError(400, "newPassword must be 1-1024 characters")
    hashed = await asyncio.to_thread(auth.hash_password, body.new_password)
    state.store.set_password(user.id, hashed, int(time.time()))
    return _empty()


@_endpoint
async def set_avatar(request: Request) -> Response:
    user = _authenticate(request)
    state = _state(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _IMAGE_TYPES:
        raise ApiError(415, "avatar must be image/png, image/jpeg, image/webp or image/gif")
    data = await _read_body(request, state.config.max_avatar_bytes)
    if not data:
        raise ApiError(400, "empty image")
    state.store.set_avatar(user.id, content_type, data)
    fresh = state.store.user(user.id)
    assert fresh is not None
    return _json(state.full_user(fresh))


@_endpoint
async def get_image(request: Request) -> Response:
    _authenticate(request)
    image = _state(request).store.image(_parse_id(request.path_params["image_id"], "imageId"))
    if image is None:
        raise ApiError(404, "no such image")
    content_type, data = image
    return Response(data, media_type=content_type, headers={"X-Content-Type-Options": "nosniff"})


@_endpoint
async def get_server(request: Request) -> Response:
    _authenticate(request)
    return _json(_state(request).store.server())


# -------------------------------------------------------------- channels


@_endpoint
async def list_channels(request: Request) -> Response:
    _authenticate(request)
    return _json(_state(request).store.channel_tree())


@_endpoint
async def get_channel(request: Request) -> Response:
    _authenticate(request)
    channel = _state(request).store.channel(
        _parse_id(request.path_params["channel_id"], "channelId")
    )
    if channel is None:
        raise ApiError(404, "no such channel")
    return _json(channel)


@_endpoint
async def create_channel(request: Request) -> Response:
    user = _authenticate(request)
    state = _state(request)
    body = await _body(request, p.NewChannel)
    name = body.name.strip()
    if not name or len(name) > 100:
        raise ApiError(400, "name must be 1-100 characters")
    description = body.description if isinstance(body.description, str) else None
    if description is not None and len(description) > 1000:
        raise ApiError(400, "description longer than 1000 characters")
    parent = body.parent_channel_id if isinstance(body.parent_channel_id, int) else None
    _check_id(parent, "parentChannelId")
    if parent is not None and not state.store.channel_exists(parent):
        raise ApiError(400, "unknown parent channel")
    ordinality = body.ordinality if isinstance(body.ordinality, int) else None
    if ordinality is not None and not 0 <= ordinality <= 1_000_000:
        raise ApiError(400, "ordinality must be between 0 and 1000000")
    caps = body.capabilities if isinstance(body.capabilities, list) else None
    if caps is not None and (len(caps) > 32 or any(len(c) > 64 for c in caps)):
        raise ApiError(400, "at most 32 capabilities of at most 64 characters")
    channel, moved = state.store.add_channel(
        name=name,
        description=description,
        parent_channel_id=parent,
        ordinality=ordinality,
        capabilities=caps,
        created_by=user.id,
    )
    state.broadcast(p.ChannelCreated(channel=channel))
    for sibling in moved:
        state.broadcast(p.ChannelsUpdated(channel=sibling))
    return _json(channel)


@_endpoint
async def delete_channel(request: Request) -> Response:
    _authenticate(request)
    state = _state(request)
    channel_id = _parse_id(request.path_params["channel_id"], "channelId")
    if not state.store.channel_exists(channel_id):
        raise ApiError(404, "no such channel")
    for deleted in reversed(state.store.delete_channel(channel_id)):
        state.broadcast(p.ChannelDeleted(channel_id=deleted))
    return _empty()


# ----------------------------------------------------------------- chats


def send_chat(
    state: ServerState,
    user: StoredUser,
    channel_id: int,
    content: str,
    sent_at: int | None,
    thread_id: int | None,
) -> p.Chat:
    """Store and broadcast a chat (REST send and the chat_written frame)."""
    _check_id(channel_id, "channelId")
    _check_id(thread_id, "threadId")
    if sent_at is not None and not 0 <= sent_at <= MAX_ID:
        raise ApiError(400, "sentAt must be a non-negative 64-bit integer")
    content = _content(state, content)
    if not state.store.channel_exists(channel_id):
        raise ApiError(400, "unknown channel")
    if thread_id is not None:
        root = state.store.chat(thread_id)
        if root is None or root.channel_id != channel_id:
            raise ApiError(400, "threadId is not a chat of this channel")
    chat = state.store.add_chat(
        channel_id=channel_id,
        author_id=user.id,
        content=content,
        created_at=now_ms() if sent_at is None else sent_at,
        thread_id=thread_id,
    )
    state.broadcast(p.ChatSent(chat=chat))
    return chat


def react(state: ServerState, user: StoredUser, chat_id: int, reaction: str, adding: bool) -> None:
    _check_id(chat_id, "chatId")
    if not reaction or len(reaction) > 64 or not reaction.strip():
        raise ApiError(400, "reaction must be 1-64 characters")
    chat = state.store.chat(chat_id)
    if chat is None:
        raise ApiError(404, "no such chat")
    state.store.react(chat_id, user.id, reaction, adding)
    fresh = state.store.chat(chat_id)
    assert fresh is not None
    state.broadcast(
        p.ChatReactionsUpdated(
            chat_id=chat.id,
            channel_id=chat.channel_id,
            thread_id=chat.thread_id,
            reactions=fresh.reactions,
        )
    )


@_endpoint
async def post_chat(request: Request) -> Response:
    user = _authenticate(request)
    state = _state(request)
    channel_id = _parse_id(request.path_params["channel_id"], "channelId")
    body = await _body(request, p.NewChat)
    sent_at = body.sent_at if isinstance(body.sent_at, int) else None
    thread_id = body.thread_id if isinstance(body.thread_id, int) else None
    return _json(send_chat(state, user, channel_id, body.content, sent_at, thread_id))


@_endpoint
async def latest_chats(request: Request) -> Response:
    _authenticate(request)
    state = _state(request)
    channel_id = _parse_id(request.path_params["channel_id"], "channelId")
    size = _query_int(request, "size", 50, 1, state.config.max_page_size)
    assert size is not None
    if not state.store.channel_exists(channel_id):
        raise ApiError(404, "no such channel")
    return _json(state.store.latest(channel_id, size))


@_endpoint
async def search_chats(request: Request) -> Response:
    _authenticate(request)
    state = _state(request)
    size = _query_int(request, "size", 50, 1, state.config.max_page_size)
    page = _query_int(request, "page", 0, 0, 1_000_000)
    assert size is not None and page is not None
    ident = (1, MAX_ID)
    query = request.query_params.get("query")
    if query is not None and len(query) > 1000:
        raise ApiError(400, "query longer than 1000 characters")
    f = SearchFilter(
        query=query,
        author_id=_query_int(request, "authorId", None, *ident),
        channel_id=_query_int(request, "channelId", None, *ident),
        thread_id=_query_int(request, "threadId", None, -1, MAX_ID),
        before=_query_int(request, "before", None, -(2**63), MAX_ID),
        after=_query_int(request, "after", None, -(2**63), MAX_ID),
        page=page,
        size=size,
    )
    if f.thread_id == 0:
        raise ApiError(400, "threadId must be a chat id or -1")
    return _json(state.store.search(f))


def _chat_or_404(state: ServerState, request: Request) -> p.Chat:
    chat = state.store.chat(_parse_id(request.path_params["chat_id"], "chatId"))
    if chat is None:
        raise ApiError(404, "no such chat")
    return chat


@_endpoint
async def get_chat(request: Request) -> Response:
    _authenticate(request)
    return _json(_chat_or_404(_state(request), request))


@_endpoint
async def edit_chat(request: Request) -> Response:
    user = _authenticate(request)
    state = _state(request)
    chat = _chat_or_404(state, request)
    body = await _body(request, p.ChatEdit)
    if chat.author_id != user.id:
        raise ApiError(403, "only the author can edit a chat")
    content = _content(state, body.content)
    edited = state.store.edit_chat(chat.id, content)
    assert edited is not None
    state.broadcast(
        p.ChatEdited(
            chat_id=chat.id, channel_id=chat.channel_id, thread_id=chat.thread_id, content=content
        )
    )
    return _json(edited)


@_endpoint
async def delete_chat(request: Request) -> Response:
    user = _authenticate(request)
    state = _state(request)
    chat = _chat_or_404(state, request)
    if chat.author_id != user.id:
        raise ApiError(403, "only the author can delete a chat")
    state.store.delete_chat(chat.id)
    state.broadcast(
        p.ChatDeleted(chat_id=chat.id, channel_id=chat.channel_id, thread_id=chat.thread_id)
    )
    return _empty()


@_endpoint
async def get_reactions(request: Request) -> Response:
    _authenticate(request)
    state = _state(request)
    chat = _chat_or_404(state, request)
    users = state.store.reactions(chat.id)
    return _json(p.Reactions(reacting_users=users, reactions={r: len(u) for r, u in users.items()}))


@_endpoint
async def post_reaction(request: Request) -> Response:
    user = _authenticate(request)
    state = _state(request)
    chat_id = _parse_id(request.path_params["chat_id"], "chatId")
    body = await _body(request, p.ReactionChange)
    react(state, user, chat_id, body.reaction, body.adding)
    return _empty()


@_endpoint
async def not_found(request: Request) -> Response:
    raise ApiError(404, "no such endpoint")


# ------------------------------------------------------------- websocket


def _ws_token(scope: Scope) -> str | None:
    """Upstream takes everything after ``?token=`` as the token; so do we."""
    query = scope.get("query_string", b"").decode("latin-1")
    for marker in ("?token=", "&token="):
        index = ("?" + query).find(marker)
        if index != -1:
            return unquote(("?" + query)[index + len(marker) :])
    return None


async def _deny(
    scope: Scope, send: Send, status: int, message: str, headers: dict[str, str]
) -> None:
    """Refuse a handshake with an HTTP response (401, 429, 503)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008, "reason": ""})  # a 403
        return
    response = error_response("/client", status, message, headers)
    await send(
        {
            "type": "websocket.http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "websocket.http.response.body", "body": response.body})


async def client_socket(state: ServerState, scope: Scope, receive: Receive, send: Send) -> None:
    """``/client?token=``: a raw ASGI handler, because every event of every
    client goes through its ``send`` and Starlette's wrappers cost on each."""
    started = time.perf_counter()
    status = 101
    try:
        if (await receive())["type"] != "websocket.connect":
            return
        status = await _client_session(state, scope, receive, send)
    finally:
        if state.config.log_requests:
            query = scope.get("query_string", b"").decode("latin-1")
            access_log.info(
                '%s "WS %s" %s %.1fms',
                (scope.get("client") or ("?", 0))[0],
                redact_url(scope.get("path", "") + ("?" + query if query else "")),
                status,
                (time.perf_counter() - started) * 1000,
            )


async def _client_session(state: ServerState, scope: Scope, receive: Receive, send: Send) -> int:
    config = state.config
    if state.shutting_down or time.monotonic() < state.refuse_until:
        await _deny(scope, send, 503, "not accepting connections now", {"Retry-After": "1"})
        return 503
    user = _token_user(state, _ws_token(scope))
    if user is None:
        await _deny(scope, send, 401, "", {})
        return 401
    if state.hub.connections_of(user.id) >= config.max_ws_per_user:
        limit = config.max_ws_per_user
        await _deny(scope, send, 429, f"at most {limit} connections per user", {})
        return 429
    await send({"type": "websocket.accept"})

    async def send_frame(frame: str | bytes) -> None:
        if isinstance(frame, str):
            await send({"type": "websocket.send", "text": frame})
        else:
            await send({"type": "websocket.send", "bytes": frame})

    async def close(code: int, reason: str) -> None:
        await send({"type": "websocket.close", "code": code, "reason": reason})

    direct = DirectWriter.attach(send) if config.direct_writes else None
    sub = Subscriber(user.id, send_frame, close, config.ws_queue_size, direct)
    state.hub.add(sub)
    loop = asyncio.get_running_loop()
    online_timer = loop.call_later(config.online_delay, _mark_online, state, sub)
    try:
        while True:
            message: Message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("text")
            if data is None:
                data = message.get("bytes")
            if data is not None and not sub.closing:
                _handle_frame(state, user, data)
    except Exception:  # the socket went away mid-receive: same as a disconnect
        pass
    finally:
        online_timer.cancel()
        await state.hub.remove(sub)
        if user.id in state.online and state.hub.connections_of(user.id) == 0:
            state.online.discard(user.id)
            state.broadcast(p.UserStatusUpdated(user_id=user.id, status="OFFLINE"))
    return 101


def _mark_online(state: ServerState, sub: Subscriber) -> None:
    if sub in state.hub.subscribers and not sub.closing and sub.user_id not in state.online:
        state.online.add(sub.user_id)
        state.broadcast(p.UserStatusUpdated(user_id=sub.user_id, status="ONLINE"))


def _handle_frame(state: ServerState, user: StoredUser, data: str | bytes) -> None:
    """Act on one client frame; anything malformed or failing is ignored."""
    try:
        frame = p.decode_client_frame(data)
    except FrameError:
        return
    try:
        if isinstance(frame, p.ChatTypingFrame):
            _check_id(frame.channel_id, "channelId")
            _check_id(frame.thread_id, "threadId")
            if not state.store.channel_exists(frame.channel_id):
                return
            sent_at = frame.sent_at if isinstance(frame.sent_at, int) else now_ms()
            state.broadcast(
                p.ChatTyping(
                    user_id=user.id,
                    channel_id=frame.channel_id,
                    thread_id=frame.thread_id,
                    sent_at=sent_at,
                )
            )
        elif isinstance(frame, p.ChatWritten):
            sent = frame.sent_at if isinstance(frame.sent_at, int) else None
            send_chat(state, user, frame.channel_id, frame.content, sent, frame.thread_id)
        elif isinstance(frame, p.ChatReaction):
            react(state, user, frame.chat_id, frame.reaction, frame.adding)
    except ApiError:
        return
    except Exception:
        log.exception("error handling a %s frame", getattr(frame, "type", "?"))


# ------------------------------------------------------------- middleware


class AccessLog:
    """One info line per request: method, path (token redacted), status, time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # websockets log their own line
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [0]

        async def sending(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            target = scope.get("path", "") + ("?" + query if query else "")
            client = scope.get("client") or ("?", 0)
            method = scope.get("method", "?")
            access_log.info(
                '%s "%s %s" %s %.1fms',
                client[0],
                method,
                redact_url(target),
                status[0],
                (time.perf_counter() - started) * 1000,
            )


class _Dispatch:
    """The websocket straight to its handler; everything else to Starlette."""

    def __init__(self, state: ServerState, app: ASGIApp) -> None:
        self.state = state
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            if scope.get("path") == "/client":
                await client_socket(self.state, scope, receive, send)
            else:
                await receive()
                await _deny(scope, send, 404, "no such endpoint", {})
            return
        await self.app(scope, receive, send)


def build_app(state: ServerState) -> ASGIApp:
    routes = [
        Route("/api/tokens", post_token, methods=["POST"]),
        Route("/api/tokens/recycle", recycle_token, methods=["GET"]),
        Route("/api/users/register", register, methods=["POST"]),
        Route("/api/users", list_users, methods=["GET"]),
        Route("/api/users/{user_id}", get_user, methods=["GET"]),
        Route("/api/self", get_self, methods=["GET"]),
        Route("/api/self/password", set_password, methods=["POST"]),
        Route("/api/self/avatar", set_avatar, methods=["POST"]),
        Route("/api/server", get_server, methods=["GET"]),
        Route("/api/images/{image_id}", get_image, methods=["GET"]),
        Route("/api/channels", list_channels, methods=["GET"]),
        Route("/api/channels", create_channel, methods=["POST"]),
        Route("/api/channels/{channel_id}", get_channel, methods=["GET"]),
        Route("/api/channels/{channel_id}", delete_channel, methods=["DELETE"]),
        Route("/api/channels/{channel_id}/chats/latest", latest_chats, methods=["GET"]),
        Route("/api/channels/{channel_id}/chats", post_chat, methods=["POST"]),
        Route("/api/chats", search_chats, methods=["GET"]),
        Route("/api/chats/{chat_id}", get_chat, methods=["GET"]),
        Route("/api/chats/{chat_id}", edit_chat, methods=["PATCH"]),
        Route("/api/chats/{chat_id}", delete_chat, methods=["DELETE"]),
        Route("/api/chats/{chat_id}/reactions", get_reactions, methods=["GET"]),
        Route("/api/chats/{chat_id}/reactions", post_reaction, methods=["POST"]),
    ]
    middleware: list[Middleware] = []
    if state.config.log_requests:
        middleware.append(Middleware(AccessLog))
    if state.config.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(state.config.cors_origins),
                allow_methods=["GET", "POST", "PATCH", "DELETE"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    app = Starlette(routes=routes, middleware=middleware)
    app.state.concord = state

    async def fallback(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return error_response(request.url.path, status, "", {})

    app.add_exception_handler(404, fallback)
    app.add_exception_handler(405, fallback)
    return _Dispatch(state, app)
