"""The server's shared state, and the actions REST and the websocket both perform.

A chat sent over ``POST /channels/{id}/chats`` or as a ``chat_written`` frame,
a reaction over REST or as a ``chat_reaction`` frame: one function each, so
both paths validate, store and broadcast the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from http import HTTPStatus

from starlette.responses import Response

from concordctl import protocol as p
from concordctl.server import auth
from concordctl.server.config import ServerConfig
from concordctl.server.flood import FrameBudget
from concordctl.server.hub import Hub
from concordctl.server.store import MAX_ID, Store, StoredUser, now_ms

__all__ = [
    "ApiError",
    "ServerState",
    "Unauthorized",
    "check_content",
    "check_id",
    "error_response",
    "react",
    "send_chat",
    "token_user",
]

log = logging.getLogger("concordctl.server")


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
    logins: auth.LoginGuard = field(init=False)
    frame_budget: FrameBudget = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        self.logins = auth.LoginGuard.for_limits(
            c.login_failures_per_user,
            c.login_failures_per_address,
            c.login_window_seconds,
            c.login_tracked_keys,
        )
        self.frame_budget = FrameBudget(
            c.ws_typing_per_second, c.ws_frames_per_second, c.ws_frame_burst
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


def error_response(path: str, status: int, message: str, headers: dict[str, str]) -> Response:
    if status == 401:
        return Response(
            b"", status_code=401, headers={"WWW-Authenticate": 'Basic realm="Realm"', **headers}
        )
    body = p.ErrorBody(path=path, status=status, error=HTTPStatus(status).phrase, message=message)
    return Response(
        p.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def check_id(value: int | None, what: str) -> None:
    if value is not None and not 0 < value <= MAX_ID:
        raise ApiError(400, f"{what} must be a positive 64-bit integer")


def token_user(state: ServerState, token: str | None) -> StoredUser | None:
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


def check_content(state: ServerState, content: str) -> str:
    if not content.strip():
        raise ApiError(400, "content must not be empty")
    if len(content) > state.config.max_content_chars:
        raise ApiError(400, f"content longer than {state.config.max_content_chars} characters")
    if "\x00" in content:
        raise ApiError(400, "content must not contain NUL characters")
    return content


def send_chat(
    state: ServerState,
    user: StoredUser,
    channel_id: int,
    content: str,
    sent_at: int | None,
    thread_id: int | None,
) -> p.Chat:
    """Store and broadcast a chat (REST send and the chat_written frame)."""
    check_id(channel_id, "channelId")
    check_id(thread_id, "threadId")
    if sent_at is not None and not 0 <= sent_at <= MAX_ID:
        raise ApiError(400, "sentAt must be a non-negative 64-bit integer")
    content = check_content(state, content)
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
    check_id(chat_id, "chatId")
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
