"""Writes: what stands between a handler and the server.

* :class:`SendGuard` paces every write (a token bucket) and stops a handler
  that keeps answering the bot's own chats (:class:`SendLoopError`);
* :class:`GuardedClient` is the client handlers see: writes go through the
  guard, and in a dry run are reported instead of made;
* :class:`DeadLetters` appends the events whose handler failed to an NDJSON
  file that ``concordctl run --replay`` feeds back.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from concordctl.bot.routes import DEAD_LETTER_KEY
from concordctl.errors import ConcordError, UsageError
from concordctl.protocol import Chat, Event, encode_event

__all__ = [
    "DeadLetters",
    "GuardedClient",
    "SendGuard",
    "SendLoopError",
    "WriteHook",
    "answering_self",
]

log = logging.getLogger("concordctl.bot")

#: Called for each write in dry-run mode instead of doing it: (action, details).
WriteHook = Callable[[str, dict[str, Any]], None]

# True while the event being handled is a chat the bot wrote itself: the loop
# guard counts sends made in that state.
answering_self: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "concordctl_answering_self", default=False
)


class SendLoopError(ConcordError):
    """A handler kept answering the bot's own chats: the send was refused."""


class SendGuard:
    """Paces the bot's writes and stops self-answer loops.

    Rate: a GCRA token bucket, ``rate`` writes per second with bursts of
    ``burst``; a write over the rate waits (with one warning per episode)
    rather than being dropped. Loop: more than ``loop_limit`` writes within
    ``loop_window`` seconds made while handling the bot's own chats raise
    :class:`SendLoopError`.
    """

    def __init__(self, rate: float, burst: int, loop_limit: int, loop_window: float) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.loop_limit = loop_limit
        self.loop_window = loop_window
        self._tat = 0.0
        self._self_sends: deque[float] = deque()
        self._warned_at = -1e9
        self.throttled = 0

    async def acquire(self, action: str) -> None:
        now = time.monotonic()
        if answering_self.get():
            window = self._self_sends
            while window and now - window[0] > self.loop_window:
                window.popleft()
            if len(window) >= self.loop_limit:
                log.warning(
                    "loop guard: refused a %s made while handling the bot's own chat "
                    "(more than %d in %.0f s); a handler is answering itself in a loop",
                    action,
                    self.loop_limit,
                    self.loop_window,
                )
                raise SendLoopError(
                    f"refused {action}: handler answers the bot's own chats in a loop",
                    hint="register it with include_self=False or check event.chat.author_id",
                )
            window.append(now)
        if self.rate <= 0:
            return
        interval = 1.0 / self.rate
        tat = max(self._tat, now)
        wait = tat - now - (self.burst - 1) * interval
        self._tat = tat + interval
        if wait > 0:
            self.throttled += 1
            if now - self._warned_at > 30.0:
                self._warned_at = now
                log.warning(
                    "throttling: the bot is writing faster than %g per second "
                    "(burst %d); writes are delayed to stay under it",
                    self.rate,
                    self.burst,
                )
            await asyncio.sleep(wait)


class GuardedClient:
    """The bot's view of its Client: writes are paced, and printed in a dry run.

    Everything else is passed through unchanged.
    """

    def __init__(self, client: Any, guard: SendGuard, dry_run: WriteHook | None) -> None:
        self._client = client
        self._guard = guard
        self._dry = dry_run
        self._fake_ids = 0
        #: With a durable state: sends of a claimed call are recorded (claims.py).
        self.coordinator: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            raise UsageError(
                f"bot.client.{name} is not available in an offline dry run",
                hint="give --server (and credentials) so reads can reach a server",
            )
        return getattr(self._client, name)

    async def _write(self, action: str, details: dict[str, Any]) -> bool:
        """Pace the write; True when it should really be done."""
        await self._guard.acquire(action)
        if self._dry is not None:
            self._dry(action, details)
            return False
        if self._client is None:
            raise UsageError(
                f"cannot {action}: this bot runs without a server",
                hint="pass client= to serve(), or a dry_run hook to see the writes",
            )
        return True

    def _fake_chat(self, channel: Any, content: str, thread_id: int | None) -> Chat:
        self._fake_ids += 1
        return Chat(
            id=-self._fake_ids,
            created_at=int(time.time() * 1000),
            author_id=0,
            channel_id=channel if isinstance(channel, int) else 0,
            thread_id=thread_id,
            content=content,
            edited=False,
            reactions={},
        )

    async def send_chat(
        self,
        channel: int | str,
        content: str,
        *,
        thread_id: int | None = None,
        sent_at: int | None = None,
    ) -> Chat:
        args = {"channel": channel, "content": content, "thread_id": thread_id}
        from concordctl.bot.claims import current_claim

        claim = current_claim.get()
        coord = self.coordinator
        if claim is not None and coord is not None and self._dry is None:

            async def send() -> Chat:
                await self._guard.acquire("send")
                return cast(
                    Chat,
                    await self._client.send_chat(
                        channel, content, thread_id=thread_id, sent_at=sent_at
                    ),
                )

            return cast(Chat, await coord.send_once(claim, channel, content, send))
        if await self._write("send", args):
            return cast(
                Chat,
                await self._client.send_chat(
                    channel, content, thread_id=thread_id, sent_at=sent_at
                ),
            )
        return self._fake_chat(channel, content, thread_id)

    async def write(self, channel: int | str, content: str, thread_id: int | None = None) -> Any:
        if await self._write("send", {"channel": channel, "content": content}):
            return await self._client.write(channel, content, thread_id=thread_id)
        return None

    async def edit_chat(self, chat_id: int, content: str) -> Chat:
        if await self._write("edit", {"chat_id": chat_id, "content": content}):
            return cast(Chat, await self._client.edit_chat(chat_id, content))
        return self._fake_chat(0, content, None)

    async def delete_chat(self, chat_id: int) -> None:
        if await self._write("delete", {"chat_id": chat_id}):
            await self._client.delete_chat(chat_id)

    async def react(self, chat_id: int, reaction: str) -> None:
        if await self._write("react", {"chat_id": chat_id, "reaction": reaction}):
            await self._client.react(chat_id, reaction)

    async def unreact(self, chat_id: int, reaction: str) -> None:
        if await self._write("unreact", {"chat_id": chat_id, "reaction": reaction}):
            await self._client.unreact(chat_id, reaction)

    async def react_frame(self, chat_id: int, reaction: str, adding: bool = True) -> None:
        action = "react" if adding else "unreact"
        if await self._write(action, {"chat_id": chat_id, "reaction": reaction}):
            await self._client.react_frame(chat_id, reaction, adding=adding)

    async def typing(self, channel: int | str, thread_id: int | None = None) -> None:
        if await self._write("typing", {"channel": channel}):
            await self._client.typing(channel, thread_id=thread_id)


class DeadLetters:
    """Appends events whose handler failed to an NDJSON file.

    Each line is the event as ``concordctl tail --json`` prints it, plus a
    ``concordctlDeadLetter`` object (handler, error, time): ``--replay`` feeds
    such a line to that handler only.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.count = 0

    def add(self, ev: Event, handler: str, error: str) -> None:
        try:
            obj = json.loads(encode_event(ev))
            obj[DEAD_LETTER_KEY] = {
                "handler": handler,
                "error": error,
                "at": int(time.time() * 1000),
            }
            line = json.dumps(obj, ensure_ascii=False) + "\n"
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
            self.count += 1
        except OSError as exc:
            log.error("cannot write the dead-letter file %s: %s", self.path, exc)
