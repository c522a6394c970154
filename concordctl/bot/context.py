"""What a handler gets to answer with: :class:`Context`, and :class:`SyncContext` for plain ``def``.

A context is made by the runtime for one call. It knows the event (for a
command: the chat, its name, words and the text after the name) and reaches
the running bot through a :class:`Host` (the runtime), so the writes go
through the bot's pacing, loop guard and dry run.
"""

# A wait's timeout is part of its API (`wait_for(..., timeout=30)`), as in discord.py.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from concordctl.bot.commands import tokenize
from concordctl.errors import UsageError
from concordctl.protocol import (
    GAP_TYPE,
    Chat,
    ChatSent,
    Event,
    Gap,
    event_channel_id,
    event_thread_id,
)

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.bot.routes import Route, RouteTable
    from concordctl.client import Client

__all__ = ["CommandContext", "Context", "Host", "SyncContext"]

T = TypeVar("T")


class Host(Protocol):
    """The runtime as a context sees it."""

    @property
    def client(self) -> Any: ...  # the paced client (GuardedClient)

    @property
    def table(self) -> RouteTable: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    async def may_run(self, route: Route, ctx: Context) -> bool: ...

    async def wait_for_event(
        self,
        types: frozenset[str] | None,
        predicate: Any,
        timeout: float | None,
        *,
        consume: bool = False,
    ) -> Event: ...


class Context:
    """What a handler gets: the event, for a command its words, and ways to answer.

    ``"!deploy web 'blue green'"`` gives ``command == "deploy"``,
    ``args == ["web", "blue green"]`` and ``text == "web 'blue green'"``.
    ``on`` handlers, periodic tasks and hooks that ask for a context get one
    too (``event`` is then the event, or None for a periodic task or hook).
    """

    __slots__ = ("_args", "_host", "command", "event", "match", "prefix", "route", "text")

    def __init__(
        self,
        host: Host,
        event: Event | None,
        command: str = "",
        args: list[str] | None = None,
        text: str = "",
        prefix: str = "!",
        match: re.Match[str] | None = None,
        route: Route | None = None,
    ) -> None:
        self._host = host  # (CommandContext.__init__ sets the same, and chat)
        self.event = event
        self.command = command
        self._args = args
        self.text = text
        self.prefix = prefix
        self.match = match
        self.route = route

    @property
    def args(self) -> list[str]:
        """The command's words (quotes removed): ``!deploy web 'a b'`` -> ``["web", "a b"]``."""
        args = self._args
        if args is None:
            args = self._args = [t[0] for t in tokenize(self.text)]
        return args

    @args.setter
    def args(self, value: list[str]) -> None:
        self._args = value

    @property
    def bot(self) -> Any:
        """The Bot this handler belongs to."""
        return self._host.table.owner

    @property
    def chat(self) -> Chat:
        """The chat of a command (or of a ``chat_sent`` event)."""
        ev = self.event
        if isinstance(ev, ChatSent):
            return ev.chat
        raise UsageError(f"ctx.chat: {ev.type if ev else 'this call'} has no chat")

    @property
    def recovered(self) -> bool:
        """True for a chat recovered after a reconnect (it may be old news)."""
        return bool(getattr(self.event, "recovered", False))

    @property
    def client(self) -> Client:
        """The bot's Client; its writes are paced like ``reply``."""
        return self._host.client  # type: ignore[no-any-return]

    @property
    def usage(self) -> str:
        """The command's usage line (``!deploy <service> [count] [--force]``)."""
        route = self.route
        sig = route.signature if route is not None else None
        if sig is not None:
            return self.prefix + sig.usage
        return self.prefix + (self.command or "?")

    def _where(self) -> tuple[int, int | None]:
        ev = self.event
        channel = event_channel_id(ev) if ev is not None else None
        if ev is None or channel is None:
            raise UsageError(
                "ctx.reply: this call has no channel to answer in",
                hint="use ctx.send(channel, text)",
            )
        return channel, event_thread_id(ev)

    async def reply(self, text: str) -> Chat:
        """Send ``text`` to the event's channel (and thread)."""
        channel, thread = self._where()
        return await self._host.client.send_chat(channel, text, thread_id=thread)  # type: ignore[no-any-return]

    async def send(self, channel: int | str, text: str, *, thread_id: int | None = None) -> Chat:
        """Send ``text`` to ``channel`` (an id or a name)."""
        return await self._host.client.send_chat(channel, text, thread_id=thread_id)  # type: ignore[no-any-return]

    async def react(self, reaction: str) -> None:
        """Add a reaction to the chat."""
        chat_id = getattr(self.event, "chat_id", None)
        if isinstance(self.event, ChatSent):
            chat_id = self.event.chat.id
        if chat_id is None:
            raise UsageError("ctx.react: this call has no chat to react to")
        await self._host.client.react(chat_id, reaction)

    async def wait_for_reply(
        self, *, match: str | re.Pattern[str] | None = None, timeout: float | None = 60.0
    ) -> Chat:
        """The next chat by the same author in the same channel and thread (TimeoutError).

        The handler's lane goes on meanwhile (other users' commands run), the
        wait does not count against its timeout, and the answer is not also
        dispatched as a command.
        """
        chat = self.chat
        pattern = re.compile(match) if isinstance(match, str) else match

        def is_answer(ev: Any) -> bool:
            c = ev.chat
            return (
                c.author_id == chat.author_id
                and c.channel_id == chat.channel_id
                and c.thread_id == chat.thread_id
                and c.id != chat.id
                and (pattern is None or pattern.search(c.content) is not None)
            )

        types = frozenset(("chat_sent",))
        found = await self._host.wait_for_event(types, is_answer, timeout, consume=True)
        assert isinstance(found, ChatSent)
        return found.chat

    async def wait_for_reaction(
        self, chat: Chat | int, reaction: str, *, timeout: float | None = 60.0
    ) -> None:
        """Until the command's author has put ``reaction`` on ``chat`` (TimeoutError)."""
        chat_id = chat.id if isinstance(chat, Chat) else chat
        author = self.chat.author_id
        client = self._host.client

        async def reacted() -> bool:
            current = await client.reactions(chat_id)
            return author in current.reacting_users.get(reaction, [])

        if await reacted():
            return
        loop = self._host.loop
        deadline = None if timeout is None else loop.time() + timeout
        # A Gap: reactions given while the stream was down are not replayed
        # (Concord keeps no event log), so the chat's reactions are read again.
        types = frozenset(("chat_reactions_updated", GAP_TYPE))

        def relevant(ev: Any) -> bool:
            if ev.__class__ is Gap:
                return True
            return bool(ev.chat_id == chat_id and ev.reactions.get(reaction, 0) > 0)

        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            await self._host.wait_for_event(types, relevant, left)
            if await reacted():  # the event has counts only: ask who reacted
                return

    async def typing(self) -> None:
        """Show "typing" in the event's channel."""
        channel, thread = self._where()
        await self._host.client.typing(channel, thread_id=thread)

    def __repr__(self) -> str:
        if isinstance(self.event, ChatSent):
            return f"Context(command={self.command!r}, args={self.args!r}, chat_id={self.chat.id})"
        return f"Context(event={self.event.type if self.event else None!r})"


class CommandContext(Context):
    """A command's context: the same, but ``chat`` is an attribute, set once.

    Checks and handlers read ``ctx.chat`` on most commands, and a property is
    a call each time.
    """

    __slots__ = ("chat",)
    chat: Chat  # the property, made an attribute

    def __init__(
        self, host: Host, event: ChatSent, command: str, text: str, prefix: str, route: Route
    ) -> None:
        # Context.__init__'s work, spelt out: a super() call would cost as much again.
        self._host = host
        self.event = event
        self.chat = event.chat
        self.command = command
        self._args = None
        self.text = text
        self.prefix = prefix
        self.match = None
        self.route = route


class SyncContext:
    """The context of a plain ``def`` handler: the same, but blocking.

    It runs in a worker thread; ``run(coro)`` runs any client coroutine on the
    bot's loop and waits for it, e.g. ``ctx.run(ctx.client.users())``.
    """

    __slots__ = ("_ctx", "_loop")

    def __init__(self, ctx: Context, loop: asyncio.AbstractEventLoop) -> None:
        self._ctx = ctx
        self._loop = loop

    bot = property(lambda self: self._ctx.bot)
    event = property(lambda self: self._ctx.event)
    chat = property(lambda self: self._ctx.chat)
    command = property(lambda self: self._ctx.command)
    args = property(lambda self: self._ctx.args)
    text = property(lambda self: self._ctx.text)
    prefix = property(lambda self: self._ctx.prefix)
    match = property(lambda self: self._ctx.match)
    recovered = property(lambda self: self._ctx.recovered)
    client = property(lambda self: self._ctx.client)
    usage = property(lambda self: self._ctx.usage)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def reply(self, text: str) -> Chat:
        return self.run(self._ctx.reply(text))

    def send(self, channel: int | str, text: str, *, thread_id: int | None = None) -> Chat:
        return self.run(self._ctx.send(channel, text, thread_id=thread_id))

    def react(self, reaction: str) -> None:
        self.run(self._ctx.react(reaction))

    def typing(self) -> None:
        self.run(self._ctx.typing())

    def wait_for_reply(
        self, *, match: str | re.Pattern[str] | None = None, timeout: float | None = 60.0
    ) -> Chat:
        return self.run(self._ctx.wait_for_reply(match=match, timeout=timeout))

    def wait_for_reaction(
        self, chat: Chat | int, reaction: str, *, timeout: float | None = 60.0
    ) -> None:
        self.run(self._ctx.wait_for_reaction(chat, reaction, timeout=timeout))

    def __repr__(self) -> str:
        return "Sync" + repr(self._ctx)
