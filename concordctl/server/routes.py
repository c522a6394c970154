"""The REST endpoints of the contract, under ``/api``.

Handlers validate their input and answer 4xx with the contract's error body
(``{path, status, error, message}``); a 401 has an empty body and
``WWW-Authenticate: Basic realm="Realm"`` as upstream's Spring Security sends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from concordctl import protocol as p
from concordctl.protocol import FrameError
from concordctl.server import auth
from concordctl.server.state import (
    ApiError,
    ServerState,
    Unauthorized,
    check_content,
    check_id,
    error_response,
    react,
    send_chat,
    token_user,
)
from concordctl.server.store import MAX_ID, SearchFilter, StoredUser

__all__ = ["ROUTES"]

log = logging.getLogger("concordctl.server")
T = TypeVar("T")

_IMAGE_TYPES = frozenset(("image/png", "image/jpeg", "image/webp", "image/gif"))


# ------------------------------------------------------------------ helpers


def _json(value: Any, status: int = 200) -> Response:
    return Response(p.encode(value), status_code=status, media_type="application/json")


def _empty() -> Response:
    return Response(b"", status_code=200)


def _parse_id(text: str, what: str) -> int:
    """A positive 64-bit id from a path or query; 400 for anything else."""
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ApiError(400, f"{what} must be a positive 64-bit integer")
    value = int(text)
    if not 0 < value <= MAX_ID:
        raise ApiError(400, f"{what} must be a positive 64-bit integer")
    return value


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


def _authenticate(request: Request) -> StoredUser:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized()
    user = token_user(_state(request), token.strip())
    if user is None:
        raise Unauthorized()
    return user


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
    if len(creds.username) > auth.MAX_USERNAME_CHARS:  # cannot exist; never a limiter key
        raise ApiError(400, "bad credentials")
    address = request.client.host if request.client else "?"
    wait = state.logins.retry_after(address, creds.username)
    if wait > 0:
        raise ApiError(
            429, "too many failed logins; try again later", {"Retry-After": str(int(wait) + 1)}
        )
    user = state.store.user_by_name(creds.username)
    stored = user.password_hash if user else auth.DUMMY_HASH
    ok = await asyncio.to_thread(auth.verify_password, creds.password, stored)
    if user is None or not ok:
        state.logins.failed(address, creds.username)
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
    check_id(parent, "parentChannelId")
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
    content = check_content(state, body.content)
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


ROUTES = [
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
