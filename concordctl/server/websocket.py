"""The websocket at ``/client?token=``: a raw ASGI handler.

Every event of every client goes through here, so it skips Starlette's
per-message wrappers. Client frames (``chat_typing``, ``chat_written``,
``chat_reaction``) act like their REST counterparts; anything malformed or
failing is ignored and the socket stays open. Each user's frames are
budgeted (``flood.py``): beyond it they are dropped, and a socket that keeps
flooding is closed with :data:`FLOOD_CODE`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from urllib.parse import unquote

from starlette.types import Message, Receive, Scope, Send

from concordctl import protocol as p
from concordctl.errors import redact_url
from concordctl.ids import now_ms
from concordctl.protocol import FrameError
from concordctl.server.actions import react, send_chat, token_user
from concordctl.server.checks import check_id
from concordctl.server.fastpath import DirectWriter
from concordctl.server.hub import Subscriber
from concordctl.server.responses import ApiError, error_response
from concordctl.server.state import ServerState
from concordctl.server.store import StoredUser

__all__ = ["FLOOD_CODE", "FLOOD_REASON", "client_socket", "deny"]

log = logging.getLogger("concordctl.server")
access_log = logging.getLogger("concordctl.server.access")

#: Close code and reason for a socket that keeps sending frames over its user's budget.
FLOOD_CODE = 1008
FLOOD_REASON = "too many frames: slow down"
#: Dropped frames are counted over this many seconds (``ws_dropped_frames_limit``).
DROP_WINDOW_SECONDS = 10.0


def _ws_token(scope: Scope) -> str | None:
    """Upstream takes everything after ``?token=`` as the token; so do we."""
    query = scope.get("query_string", b"").decode("latin-1")
    for marker in ("?token=", "&token="):
        index = ("?" + query).find(marker)
        if index != -1:
            return unquote(("?" + query)[index + len(marker) :])
    return None


async def deny(
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
        await deny(scope, send, 503, "not accepting connections now", {"Retry-After": "1"})
        return 503
    user = await token_user(state, _ws_token(scope))
    if user is None:
        await deny(scope, send, 401, "", {})
        return 401
    if state.hub.connections_of(user.id) >= config.max_ws_per_user:
        limit = config.max_ws_per_user
        await deny(
            scope,
            send,
            429,
            f"this user already has {limit} open connections, the most a user may have "
            "(ServerConfig.max_ws_per_user); close one and retry",
            {},
        )
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
    sub = Subscriber(
        user.id,
        send_frame,
        close,
        config.ws_queue_size,
        direct,
        config.ws_close_timeout,
        config.ws_buffer_bytes,
    )
    state.hub.add(sub)
    loop = asyncio.get_running_loop()
    online_timer = loop.call_later(config.online_delay, _mark_online, state, sub)
    # When this socket's recent frames were dropped over the budget (``flood.py``).
    dropped: deque[float] = deque(maxlen=config.ws_dropped_frames_limit + 1)
    try:
        while True:
            message: Message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("text")
            if data is None:
                data = message.get("bytes")
            if data is not None and not sub.closing and not await _handle_frame(state, user, data):
                dropped.append(loop.time())
                while dropped and dropped[0] < loop.time() - DROP_WINDOW_SECONDS:
                    dropped.popleft()
                if len(dropped) > config.ws_dropped_frames_limit:
                    log.warning("closing a websocket of user %s: it floods frames", user.id)
                    await sub.close(FLOOD_CODE, FLOOD_REASON)
    except Exception:  # the socket went away mid-receive: same as a disconnect
        pass
    finally:
        online_timer.cancel()
        await state.hub.remove(sub)
        if state.hub.connections_of(user.id) == 0:
            state.fanout.presence(user.id, False)
    return 101


def _mark_online(state: ServerState, sub: Subscriber) -> None:
    if sub in state.hub.subscribers and not sub.closing:
        state.fanout.presence(sub.user_id, True)


async def _handle_frame(state: ServerState, user: StoredUser, data: str | bytes) -> bool:
    """Act on one client frame; anything malformed or failing is ignored.
    False if the frame was dropped for going over the user's budget."""
    try:
        frame = p.decode_client_frame(data)
    except FrameError:
        return True
    budget = state.limits.frames
    try:
        if isinstance(frame, p.ChatTypingFrame):
            check_id(frame.channel_id, "channelId")
            check_id(frame.thread_id, "threadId")
            if not await state.store.channel_exists(frame.channel_id):
                return True
            sent_at = frame.sent_at if isinstance(frame.sent_at, int) else now_ms()
            event = p.ChatTyping(
                user_id=user.id,
                channel_id=frame.channel_id,
                thread_id=frame.thread_id,
                sent_at=sent_at,
            )
            return budget.offer_typing(user.id, frame.channel_id, event, state.broadcast)
        elif isinstance(frame, p.ChatWritten):
            if not budget.allow_write(user.id):
                return False
            sent = frame.sent_at if isinstance(frame.sent_at, int) else None
            await send_chat(state, user, frame.channel_id, frame.content, sent, frame.thread_id)
        elif isinstance(frame, p.ChatReaction):
            if not budget.allow_write(user.id):
                return False
            await react(state, user, frame.chat_id, frame.reaction, frame.adding)
    except ApiError:
        return True
    except Exception:
        log.exception("error handling a %s frame", getattr(frame, "type", "?"))
    return True
