"""The REST endpoints of the contract, under ``/api``, plus our few extensions.

Handlers validate their input and raise
:class:`~concordctl.server.responses.ApiError` for a 4xx; the exception
handlers here (:data:`EXCEPTION_HANDLERS`, and :class:`InternalErrors` for
bugs) turn that into the contract's error body ``{path, status, error,
message}`` once for every route. A 401 has an empty body and
``WWW-Authenticate: Basic realm="Realm"`` as upstream's Spring Security sends.

Our extensions: ``PATCH /api/channels/{id}``, ``PATCH /api/server``,
``POST /api/admin/users/promote`` and ``DELETE /api/tokens``. Channel changes
and server edits need an admin unless ``ServerConfig.open_channels``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from concordctl import protocol as p
from concordctl.ids import MAX_ID
from concordctl.protocol import FrameError
from concordctl.server import auth
from concordctl.server.actions import close_sessions, issue_token, react, send_chat, token_user
from concordctl.server.checks import (
    MAX_USERNAME_CHARS,
    check_content,
    check_credentials,
    check_id,
    parse_id,
    require_admin,
)
from concordctl.server.responses import (
    ApiError,
    Forbidden,
    Unauthorized,
    empty_response,
    error_response,
    json_response,
)
from concordctl.server.state import ServerState
from concordctl.server.store import SearchFilter, StoredUser

__all__ = ["EXCEPTION_HANDLERS", "ROUTES", "InternalErrors"]

log = logging.getLogger("concordctl.server")
T = TypeVar("T")

_IMAGE_TYPES = frozenset(("image/png", "image/jpeg", "image/webp", "image/gif"))


# ------------------------------------------------------------ error handling


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(request.url.path, exc.status, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    return error_response(request.url.path, status, "", {})


#: Starlette's exception handlers: an ApiError, or routing's 404/405, as the contract's error.
EXCEPTION_HANDLERS: Mapping[Any, Callable[..., Any]] = {
    ApiError: _api_error,
    HTTPException: _http_error,
}


class InternalErrors:
    """ASGI middleware: a bug in a handler is logged and answered 500 (the
    contract's body, no traceback), and nothing is re-raised to uvicorn."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            path = scope.get("path", "")
            log.exception("internal error on %s %s", scope.get("method", "?"), path)
            if not started:
                response = error_response(path, 500, "internal error", {})
                await response(scope, receive, send)


# ------------------------------------------------------------------ helpers


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
    state = _state(request)
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


def _address(request: Request) -> str:
    return request.client.host if request.client else "?"


async def _authenticate(request: Request) -> StoredUser:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized()
    user = await token_user(_state(request), token.strip())
    if user is None:
        raise Unauthorized()
    return user


def _channel_admin(state: ServerState, user: StoredUser, action: str) -> None:
    require_admin(user, action, open_to_all=state.config.open_channels)


def _optional_text(value: object, what: str, limit: int) -> str | None:
    if value is None or not isinstance(value, str):
        return None
    if len(value) > limit:
        raise ApiError(400, f"{what} longer than {limit} characters")
    return value


def _name(value: object, what: str = "name", limit: int = 100) -> str | None:
    if not isinstance(value, str):
        return None
    name = value.strip()
    if not name or len(name) > limit:
        raise ApiError(400, f"{what} must be 1-{limit} characters")
    return name


# ---------------------------------------------------------------- tokens


async def post_token(request: Request) -> Response:
    """``POST /api/tokens``: a token for good credentials; 400 otherwise, 429
    (with ``Retry-After``, the right password included) past the failure limits."""
    state = _state(request)
    creds = await _body(request, p.Credentials)
    if len(creds.username) > MAX_USERNAME_CHARS:
        raise ApiError(400, "bad credentials")  # no such user can exist; not worth a limiter key
    logins = state.limits.logins
    address = _address(request)
    wait = logins.retry_after(address, creds.username)
    if wait > 0:
        raise ApiError(
            429, "too many failed logins; try again later", {"Retry-After": str(int(wait) + 1)}
        )
    user = await state.store.user_by_name(creds.username)
    stored = user.password_hash if user else auth.dummy_hash(state.config.password_cost)
    ok = await asyncio.to_thread(auth.verify_password, creds.password, stored)
    if user is None or not ok:
        logins.failed(address, creds.username)
        raise ApiError(400, "bad credentials")
    return json_response(p.Token(token=issue_token(state, user)))


async def recycle_token(request: Request) -> Response:
    """``GET /api/tokens/recycle``: a fresh token for the caller's valid one."""
    user = await _authenticate(request)
    return json_response(p.Token(token=issue_token(_state(request), user)))


async def revoke_tokens(request: Request) -> Response:
    """``DELETE /api/tokens`` (ours): every token of the caller stops working
    and its sockets close with 4001 (``concordctl logout``)."""
    user = await _authenticate(request)
    state = _state(request)
    await state.store.revoke_tokens(user.id)
    await close_sessions(state, user.id, "logged out")
    return empty_response()


# ----------------------------------------------------------------- users


async def register(request: Request) -> Response:
    """``POST /api/users/register``: a new account; 400 when the name (compared
    by its NFKC + casefold key) is taken; 403 when registration is off; 429
    past the per-address limit."""
    state = _state(request)
    if not state.config.registration:
        raise Forbidden("registration is closed on this server; ask its admin for an account")
    creds = await _body(request, p.Credentials)
    check_credentials(creds)
    limiter = state.limits.registrations
    address_key = "addr:" + _address(request)
    wait = limiter.retry_after(address_key)
    if wait > 0:
        raise ApiError(
            429,
            "too many registrations from this address; try again later",
            {"Retry-After": str(int(wait) + 1)},
        )
    hashed = await asyncio.to_thread(
        auth.hash_password, creds.password, n=state.config.password_cost
    )
    user = await state.store.add_user(creds.username, hashed)
    if user is None:
        raise ApiError(400, "username taken")
    limiter.failed(address_key)  # counts the registration
    state.broadcast(p.UserJoined(user_id=user.id))
    return json_response(p.RegisteredUser(id=user.id, username=user.username))


async def list_users(request: Request) -> Response:
    """``GET /api/users``: every user with online status."""
    await _authenticate(request)
    state = _state(request)
    return json_response([state.presence.full_user(u) for u in await state.store.users()])


async def get_user(request: Request) -> Response:
    """``GET /api/users/{userId}``: one user; 404 when unknown."""
    await _authenticate(request)
    state = _state(request)
    user = await state.store.user(parse_id(request.path_params["user_id"], "userId"))
    if user is None:
        raise ApiError(404, "no such user")
    return json_response(state.presence.full_user(user))


async def get_self(request: Request) -> Response:
    """``GET /api/self``: the caller."""
    user = await _authenticate(request)
    return json_response(_state(request).presence.full_user(user))


async def set_password(request: Request) -> Response:
    """``POST /api/self/password``: a new password. Every token of the user,
    the caller's included, stops working, and the user's sockets close with
    4001: log in again with the new password."""
    user = await _authenticate(request)
    state = _state(request)
    body = await _body(request, p.NewPassword)
    if not body.new_password or len(body.new_password) > 1024:
        raise ApiError(400, "newPassword must be 1-1024 characters")
    hashed = await asyncio.to_thread(
        auth.hash_password, body.new_password, n=state.config.password_cost
    )
    await state.store.set_password(user.id, hashed)
    await close_sessions(state, user.id, "password changed")
    return empty_response()


async def set_avatar(request: Request) -> Response:
    """``POST /api/self/avatar``: a raw PNG, JPEG, WebP or GIF replaces (and
    deletes) the previous avatar; 415 for other types, 413 too big, 429 past
    the per-user upload budget."""
    user = await _authenticate(request)
    state = _state(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _IMAGE_TYPES:
        raise ApiError(415, "avatar must be image/png, image/jpeg, image/webp or image/gif")
    data = await _read_body(request, state.config.max_avatar_bytes)
    if not data:
        raise ApiError(400, "empty image")
    budget = state.limits.avatar_uploads
    refusal = budget.refusal(user.id, len(data))
    if refusal is not None:
        raise ApiError(429, f"avatar uploads: {refusal}; try again later")
    budget.spend(user.id, len(data))
    await state.store.set_avatar(user.id, content_type, data)
    fresh = await state.store.user(user.id)
    assert fresh is not None
    return json_response(state.presence.full_user(fresh))


async def get_image(request: Request) -> Response:
    """``GET /api/images/{imageId}``: the image's bytes with its content type."""
    await _authenticate(request)
    image = await _state(request).store.image(parse_id(request.path_params["image_id"], "imageId"))
    if image is None:
        raise ApiError(404, "no such image")
    content_type, data = image
    return Response(data, media_type=content_type, headers={"X-Content-Type-Options": "nosniff"})


async def get_server(request: Request) -> Response:
    """``GET /api/server``: name, description, icon id and default channel."""
    await _authenticate(request)
    return json_response(await _state(request).store.server())


async def patch_server(request: Request) -> Response:
    """``PATCH /api/server`` (ours) ``{name?, description?}``: admins only
    (unless open channels); the updated server."""
    user = await _authenticate(request)
    state = _state(request)
    body = await _body(request, p.ServerEdit)  # a 413 comes before a 403
    _channel_admin(state, user, "edit the server")
    name = _name(body.name)
    description = _optional_text(body.description, "description", 1000)
    return json_response(await state.store.update_server(name, description))


async def promote_user(request: Request) -> Response:
    """``POST /api/admin/users/promote`` (ours) ``{username}``: make a user an
    admin; 403 unless the caller is one, 404 for an unknown name."""
    caller = await _authenticate(request)
    require_admin(caller, "promote users")
    state = _state(request)
    body = await _body(request, p.Promotion)
    user = await state.store.user_by_name(body.username)
    if user is None:
        raise ApiError(404, "no such user")
    promoted = await state.store.set_admin(user.id)
    assert promoted is not None
    return json_response(
        p.PromotedUser(id=promoted.id, username=promoted.username, admin=promoted.admin)
    )


# -------------------------------------------------------------- channels


async def list_channels(request: Request) -> Response:
    """``GET /api/channels``: the channel tree."""
    await _authenticate(request)
    return json_response(await _state(request).store.channel_tree())


async def get_channel(request: Request) -> Response:
    """``GET /api/channels/{channelId}``: one channel; 404 when unknown."""
    await _authenticate(request)
    channel = await _state(request).store.channel(
        parse_id(request.path_params["channel_id"], "channelId")
    )
    if channel is None:
        raise ApiError(404, "no such channel")
    return json_response(channel)


async def create_channel(request: Request) -> Response:
    """``POST /api/channels``: a new channel (admins, or anyone with open
    channels); broadcasts channel_created and channels_updated for moved siblings."""
    user = await _authenticate(request)
    state = _state(request)
    body = await _body(request, p.NewChannel)  # a 413 comes before a 403
    _channel_admin(state, user, "create channels")
    name = _name(body.name)
    if name is None:
        raise ApiError(400, "name must be 1-100 characters")
    description = _optional_text(body.description, "description", 1000)
    parent = body.parent_channel_id if isinstance(body.parent_channel_id, int) else None
    check_id(parent, "parentChannelId")
    if parent is not None and not await state.store.channel_exists(parent):
        raise ApiError(400, "unknown parent channel")
    ordinality = body.ordinality if isinstance(body.ordinality, int) else None
    if ordinality is not None and not 0 <= ordinality <= 1_000_000:
        raise ApiError(400, "ordinality must be between 0 and 1000000")
    caps = body.capabilities if isinstance(body.capabilities, list) else None
    if caps is not None and (len(caps) > 32 or any(len(c) > 64 for c in caps)):
        raise ApiError(400, "at most 32 capabilities of at most 64 characters")
    channel, moved = await state.store.add_channel(
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
    return json_response(channel)


async def patch_channel(request: Request) -> Response:
    """``PATCH /api/channels/{channelId}`` (ours) ``{name?, description?}``:
    admins (or open channels); 404 unknown; broadcasts channels_updated."""
    user = await _authenticate(request)
    state = _state(request)
    channel_id = parse_id(request.path_params["channel_id"], "channelId")
    body = await _body(request, p.ChannelEdit)  # a 413 comes before a 403
    _channel_admin(state, user, "edit channels")
    name = _name(body.name)
    description = _optional_text(body.description, "description", 1000)
    if not await state.store.channel_exists(channel_id):
        raise ApiError(404, "no such channel")
    channel = await state.store.update_channel(channel_id, name, description)
    if channel is None:
        raise ApiError(404, "no such channel")
    state.broadcast(p.ChannelsUpdated(channel=channel))
    return json_response(channel)


async def delete_channel(request: Request) -> Response:
    """``DELETE /api/channels/{channelId}``: the channel, its sub-channels and
    their chats (admins, or open channels); broadcasts channel_deleted for each."""
    user = await _authenticate(request)
    state = _state(request)
    channel_id = parse_id(request.path_params["channel_id"], "channelId")
    _channel_admin(state, user, "delete channels")
    if not await state.store.channel_exists(channel_id):
        raise ApiError(404, "no such channel")
    for deleted in reversed(await state.store.delete_channel(channel_id)):
        state.broadcast(p.ChannelDeleted(channel_id=deleted))
    return empty_response()


# ----------------------------------------------------------------- chats


async def post_chat(request: Request) -> Response:
    """``POST /api/channels/{channelId}/chats``: send a chat; 400 unknown channel."""
    user = await _authenticate(request)
    state = _state(request)
    channel_id = parse_id(request.path_params["channel_id"], "channelId")
    body = await _body(request, p.NewChat)
    sent_at = body.sent_at if isinstance(body.sent_at, int) else None
    thread_id = body.thread_id if isinstance(body.thread_id, int) else None
    return json_response(await send_chat(state, user, channel_id, body.content, sent_at, thread_id))


async def latest_chats(request: Request) -> Response:
    """``GET /api/channels/{channelId}/chats/latest?size=``: newest first; 404 unknown."""
    await _authenticate(request)
    state = _state(request)
    channel_id = parse_id(request.path_params["channel_id"], "channelId")
    size = _query_int(request, "size", 50, 1, state.config.max_page_size)
    assert size is not None
    if not await state.store.channel_exists(channel_id):
        raise ApiError(404, "no such channel")
    return json_response(await state.store.latest(channel_id, size))


async def search_chats(request: Request) -> Response:
    """``GET /api/chats``: search, newest first. ``query``: several words =
    all of them, ``"quoted words"`` = a phrase (``store/search.py``)."""
    await _authenticate(request)
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
    return json_response(await state.store.search(f))


async def _chat_or_404(state: ServerState, request: Request) -> p.Chat:
    chat = await state.store.chat(parse_id(request.path_params["chat_id"], "chatId"))
    if chat is None:
        raise ApiError(404, "no such chat")
    return chat


async def get_chat(request: Request) -> Response:
    """``GET /api/chats/{chatId}``: one chat; 404 when unknown."""
    await _authenticate(request)
    return json_response(await _chat_or_404(_state(request), request))


async def edit_chat(request: Request) -> Response:
    """``PATCH /api/chats/{chatId}``: new content, by the author only (403)."""
    user = await _authenticate(request)
    state = _state(request)
    chat = await _chat_or_404(state, request)
    body = await _body(request, p.ChatEdit)
    if chat.author_id != user.id:
        raise ApiError(403, "only the author can edit a chat")
    content = check_content(state.config, body.content)
    edited = await state.store.edit_chat(chat.id, content)
    if edited is None:
        raise ApiError(404, "no such chat")
    state.broadcast(
        p.ChatEdited(
            chat_id=chat.id, channel_id=chat.channel_id, thread_id=chat.thread_id, content=content
        )
    )
    return json_response(edited)


async def delete_chat(request: Request) -> Response:
    """``DELETE /api/chats/{chatId}``: by the author only (403); 404 when unknown."""
    user = await _authenticate(request)
    state = _state(request)
    chat = await _chat_or_404(state, request)
    if chat.author_id != user.id:
        raise ApiError(403, "only the author can delete a chat")
    await state.store.delete_chat(chat.id)
    state.broadcast(
        p.ChatDeleted(chat_id=chat.id, channel_id=chat.channel_id, thread_id=chat.thread_id)
    )
    return empty_response()


async def get_reactions(request: Request) -> Response:
    """``GET /api/chats/{chatId}/reactions``: who reacted with what, and counts."""
    await _authenticate(request)
    state = _state(request)
    chat = await _chat_or_404(state, request)
    users = await state.store.reactions(chat.id)
    return json_response(
        p.Reactions(reacting_users=users, reactions={r: len(u) for r, u in users.items()})
    )


async def post_reaction(request: Request) -> Response:
    """``POST /api/chats/{chatId}/reactions`` ``{reaction, adding}``; 404 unknown chat."""
    user = await _authenticate(request)
    state = _state(request)
    chat_id = parse_id(request.path_params["chat_id"], "chatId")
    body = await _body(request, p.ReactionChange)
    await react(state, user, chat_id, body.reaction, body.adding)
    return empty_response()


#: Every REST route of the server, for ``app.py``.
ROUTES = [
    Route("/api/tokens", post_token, methods=["POST"]),
    Route("/api/tokens", revoke_tokens, methods=["DELETE"]),
    Route("/api/tokens/recycle", recycle_token, methods=["GET"]),
    Route("/api/users/register", register, methods=["POST"]),
    Route("/api/users", list_users, methods=["GET"]),
    Route("/api/users/{user_id}", get_user, methods=["GET"]),
    Route("/api/self", get_self, methods=["GET"]),
    Route("/api/self/password", set_password, methods=["POST"]),
    Route("/api/self/avatar", set_avatar, methods=["POST"]),
    Route("/api/server", get_server, methods=["GET"]),
    Route("/api/server", patch_server, methods=["PATCH"]),
    Route("/api/admin/users/promote", promote_user, methods=["POST"]),
    Route("/api/images/{image_id}", get_image, methods=["GET"]),
    Route("/api/channels", list_channels, methods=["GET"]),
    Route("/api/channels", create_channel, methods=["POST"]),
    Route("/api/channels/{channel_id}", get_channel, methods=["GET"]),
    Route("/api/channels/{channel_id}", patch_channel, methods=["PATCH"]),
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
