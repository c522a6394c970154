"""The actions REST and the websocket both perform, each written once.

A chat sent over ``POST /channels/{id}/chats`` or as a ``chat_written`` frame,
a reaction over REST or as a ``chat_reaction`` frame: one coroutine each, so
both paths validate, store and broadcast the same way. Each broadcasts right
after its write commits, with no ``await`` between, so events leave in
commit order.
"""

from __future__ import annotations

import asyncio

from concordctl import protocol as p
from concordctl.ids import MAX_ID, now_ms
from concordctl.server import auth
from concordctl.server.checks import check_content, check_id
from concordctl.server.responses import ApiError
from concordctl.server.state import ServerState
from concordctl.server.store import StoredUser

__all__ = ["REVOKED_CODE", "close_sessions", "issue_token", "react", "send_chat", "token_user"]

#: Close code for sockets whose token was retired (password change, logout everywhere).
REVOKED_CODE = 4001


async def token_user(state: ServerState, token: str | None) -> StoredUser | None:
    """The user a token belongs to, or None when it is not (or no longer) valid.

    A token carries its user's token version: a password change or ``DELETE
    /api/tokens`` bumps the version, so every token issued before it fails
    here, even one issued in the same second.
    """
    if not token:
        return None
    try:
        claims = state.signer.verify(token)
    except auth.TokenError:
        return None
    user = await state.store.user(claims.user_id)
    if user is None or user.username != claims.username:
        return None
    if claims.version is None:
        # A token from before version claims: the old seconds-based rule.
        if claims.issued_at < user.password_changed_at or user.token_version > 0:
            return None
    elif claims.version != user.token_version:
        return None
    return user


def issue_token(state: ServerState, user: StoredUser) -> str:
    """A new token for ``user`` at its current token version."""
    return state.signer.issue(user.username, user.id, version=user.token_version)


async def close_sessions(state: ServerState, user_id: int, reason: str) -> None:
    """Close every socket of the user with 4001 (its tokens were just retired)."""
    subs = [s for s in state.hub.subscribers if s.user_id == user_id and not s.closing]
    if subs:
        await asyncio.gather(*(s.close(REVOKED_CODE, reason) for s in subs))
    state.fanout.close_user(user_id, REVOKED_CODE, reason)  # other nodes' sockets


async def send_chat(
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
    content = check_content(state.config, content)
    store = state.store
    if not await store.channel_exists(channel_id):
        raise ApiError(400, "unknown channel")
    if thread_id is not None:
        root = await store.chat(thread_id)
        if root is None or root.channel_id != channel_id:
            raise ApiError(400, "threadId is not a chat of this channel")
    chat = await store.add_chat(
        channel_id=channel_id,
        author_id=user.id,
        content=content,
        created_at=now_ms() if sent_at is None else sent_at,
        thread_id=thread_id,
    )
    state.broadcast(p.ChatSent(chat=chat))
    return chat


async def react(
    state: ServerState, user: StoredUser, chat_id: int, reaction: str, adding: bool
) -> None:
    """Add or remove a reaction and broadcast the chat's new counts."""
    check_id(chat_id, "chatId")
    if not reaction or len(reaction) > 64 or not reaction.strip():
        raise ApiError(400, "reaction must be 1-64 characters")
    chat = await state.store.chat(chat_id)
    if chat is None:
        raise ApiError(404, "no such chat")
    await state.store.react(chat_id, user.id, reaction, adding)
    fresh = await state.store.chat(chat_id)
    if fresh is None:  # deleted meanwhile
        return
    state.broadcast(
        p.ChatReactionsUpdated(
            chat_id=chat.id,
            channel_id=chat.channel_id,
            thread_id=chat.thread_id,
            reactions=fresh.reactions,
        )
    )
