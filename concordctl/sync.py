"""A small synchronous facade for scripts that do one thing.

    import concordctl.sync as concord
    chat = concord.send_chat("general", "deploy done")   # settings as the CLI
    concord.send_chat("#ops", "hi", server="http://127.0.0.1:8080", token="...")

Each call opens a :class:`~concordctl.client.Client` with the given keyword
arguments (``server``, ``username``, ``password``, ``token``, ``profile``...),
runs one coroutine in a fresh event loop and closes everything. Do not call
these from inside a running event loop: ``await`` the Client there instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from concordctl import protocol as p
from concordctl.client import ChannelRef, Client

__all__ = ["channels", "edit_chat", "latest_chats", "me", "react", "run", "send_chat"]

T = TypeVar("T")


def run(fn: Callable[[Client], Awaitable[T]], **client_kwargs: Any) -> T:
    """Run ``fn(client)`` with a client built from ``client_kwargs``."""

    async def main() -> T:
        async with Client(**client_kwargs) as client:
            return await fn(client)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    raise RuntimeError("concordctl.sync cannot run inside an event loop; use Client instead")


def send_chat(
    channel: ChannelRef,
    content: str,
    *,
    thread_id: int | None = None,
    sent_at: int | None = None,
    **client_kwargs: Any,
) -> p.Chat:
    """Send one chat and return it (the server's copy, with its id)."""
    return run(
        lambda c: c.send_chat(channel, content, thread_id=thread_id, sent_at=sent_at),
        **client_kwargs,
    )


def edit_chat(chat_id: int, content: str, **client_kwargs: Any) -> p.Chat:
    return run(lambda c: c.edit_chat(chat_id, content), **client_kwargs)


def react(chat_id: int, reaction: str, **client_kwargs: Any) -> None:
    run(lambda c: c.react(chat_id, reaction), **client_kwargs)


def latest_chats(channel: ChannelRef, limit: int = 50, **client_kwargs: Any) -> list[p.Chat]:
    return run(lambda c: c.latest_chats(channel, limit), **client_kwargs)


def channels(**client_kwargs: Any) -> list[p.FullChannel]:
    return run(lambda c: c.channels(), **client_kwargs)


def me(**client_kwargs: Any) -> p.FullUser:
    return run(lambda c: c.me(), **client_kwargs)
