"""A pytest plugin for testing bots against a real (embedded) Concord server.

Installed with concordctl (entry point ``pytest11``), so a bot author's tests
just use the fixtures; they need ``pytest-asyncio``::

    from concordctl import Bot, Context

    async def test_ping(concord_harness):
        bot = Bot()

        @bot.command("ping")
        async def ping(ctx: Context) -> None:
            await ctx.reply("pong")

        await concord_harness.start_bot(bot)
        chat = await concord_harness.send("!ping", as_user="alice")
        reply = await concord_harness.expect_reply(chat)
        assert reply.content == "pong"

Fixtures (each test gets its own server on 127.0.0.1, port 0, in memory):

* ``concord_server_config``: the :class:`~concordctl.server.ServerConfig`;
  override it in your conftest to change limits.
* ``concord_server``: the running :class:`~concordctl.server.EmbeddedServer`.
* ``concord_harness``: a :class:`Harness` on that server: users, bots in the
  background, send and expect helpers, fault injection.

Fixture names start with ``concord_`` so they do not clash with yours.
"""

# Test helpers take a timeout on purpose: "expect this within N s" is the API.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import secrets
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest

from concordctl.protocol import (
    Chat,
    ChatReactionsUpdated,
    ChatSent,
    Event,
    FrameError,
    decode_event,
)

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.bot import Bot, HandlerError
    from concordctl.client import Client
    from concordctl.server import EmbeddedServer, ServerConfig

__all__ = ["HandlerFailed", "Harness"]

# The async fixtures need pytest-asyncio; without it the plugin must still load
# (it is loaded by every pytest run where concordctl is installed).
_HAVE_PYTEST_ASYNCIO = importlib.util.find_spec("pytest_asyncio") is not None

# A bot the harness runs reconnects at a loopback pace: 0.05 s, doubling up to
# 0.5 s (the client's default, 0.5 s up to 30 s, suits a real network), so a test
# that drops or refuses connections waits a fraction of a second, not seconds.
_LOOPBACK = {"backoff": {"base": 0.05, "cap": 0.5}}


class HandlerFailed(AssertionError):
    """A bot handler raised or timed out while a test waited (``raise_handler_errors``)."""


class Harness:
    """Drives a test: users, bots running in the background, expectations, faults.

    Everything the server broadcasts is recorded (``events``) on the server
    side, from the moment the harness starts, so an expectation never misses
    a reply that came before it was awaited, nor one sent while the harness's
    own faults had every client disconnected.
    """

    def __init__(self, server: EmbeddedServer, *, default_timeout: float = 5.0) -> None:
        self.server = server
        self.default_timeout = default_timeout
        self.events: list[Event] = []
        self._passwords: dict[str, str] = {}
        self._clients: dict[str, Client] = {}
        self._ids: dict[str, int] = {}
        self._bots: list[tuple[Bot, asyncio.Task[None], Client]] = []
        self._bot_user_id: int | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._recording = False
        #: Handler errors of bots started with raise_handler_errors=True, not yet raised.
        self.handler_errors: list[HandlerError] = []
        from concordctl.bot.schedule import SteppedClock

        #: The clock of the bots this harness starts: real time until ``advance``.
        self.clock = SteppedClock()

    @property
    def url(self) -> str:
        return self.server.url

    # -- set-up and tear-down -------------------------------------------

    async def start(self) -> None:
        """Record every frame the server broadcasts, from now on."""
        self.server.state.hub.observers.append(self._record)
        self._recording = True

    def _record(self, frame: bytes | str) -> None:
        try:
            ev = decode_event(frame)
        except FrameError:
            return  # a garbage frame from send_raw: no event to expect
        self.events.append(ev)
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _handler_failed(self, err: HandlerError) -> None:
        self.handler_errors.append(err)
        self._wake()

    def _raise_handler_error(self) -> None:
        if self.handler_errors:
            err = self.handler_errors.pop(0)
            what = "timed out" if err.timed_out else "raised"
            raise HandlerFailed(
                f"bot handler {err.handler} {what}"
                + (f":\n{err.traceback}" if err.traceback else "")
            ) from err.exception

    async def close(self) -> None:
        for bot, _task, _client in list(self._bots):
            await self.stop_bot(bot)
        if self._recording:
            with contextlib.suppress(ValueError, RuntimeError):
                self.server.state.hub.observers.remove(self._record)
            self._recording = False
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        self._clients.clear()

    # -- users -------------------------------------------------------------

    async def register(self, username: str, password: str | None = None) -> str:
        """Register ``username`` (once); returns its password."""
        if username in self._passwords:
            return self._passwords[username]
        from concordctl.client import Client

        password = password or "pw-" + secrets.token_hex(8)
        async with Client(self.url) as anonymous:
            registered = await anonymous.register(username, password)
        self._passwords[username] = password
        self._ids[username] = registered.id
        return password

    async def user(self, username: str) -> Client:
        """A logged-in Client for ``username`` (registered on first use, then reused)."""
        client = self._clients.get(username)
        if client is None:
            from concordctl.client import Client

            password = await self.register(username)
            client = Client(self.url, username=username, password=password)
            await client.__aenter__()
            self._clients[username] = client
        return client

    def user_id(self, username: str) -> int:
        """The id of a user registered through the harness."""
        return self._ids[username]

    # -- bots --------------------------------------------------------------

    async def start_bot(
        self,
        bot: Bot,
        *,
        username: str = "bot",
        timeout: float | None = None,
        raise_handler_errors: bool = True,
    ) -> Bot:
        """Run ``bot`` in the background as ``username``; returns once it is ready.

        If the bot fails to start, its error is raised here. The bot is stopped
        when the test ends (or with :meth:`stop_bot`). With
        ``raise_handler_errors`` (the default) a handler's exception or timeout
        fails the expectation being awaited at once, with the handler's
        traceback; pass False for a test where handlers fail on purpose.
        """
        from concordctl.bot.schedule import SystemClock
        from concordctl.client import Client

        if isinstance(bot.clock, SystemClock):
            bot.clock = self.clock  # so h.advance() moves its schedules
        password = await self.register(username)
        client = Client(self.url, username=username, password=password, stream_options=_LOOPBACK)
        await client.__aenter__()
        observer = self._handler_failed if raise_handler_errors else None
        task = asyncio.create_task(
            bot.serve(client=client, on_handler_error=observer), name=f"concord-bot-{username}"
        )
        self._bots.append((bot, task, client))
        self._bot_user_id = self._ids[username]
        ready = asyncio.create_task(bot.wait_ready())
        done, _ = await asyncio.wait(
            {ready, task},
            timeout=timeout or self.default_timeout * 2,
            return_when=asyncio.FIRST_COMPLETED,
        )
        ready.cancel()
        if task in done:
            self._bots.remove((bot, task, client))
            await client.aclose()
            task.result()  # raises why the bot could not start
            raise AssertionError("the bot stopped before it was ready")
        if not done:
            raise TimeoutError(
                f"the bot was not ready within {timeout or self.default_timeout * 2} s"
            )
        return bot

    def advance(self, delta: Any = None, **parts: float) -> Any:
        """Move the bots' clock forward (``h.advance(minutes=10)``): due jobs run now."""
        return self.clock.advance(delta, **parts)

    async def run_job(self, job: Any, bot: Bot | None = None) -> None:
        """Run a scheduled handler (or a ``Job``, or a job key) once now, and wait for it."""
        from concordctl.bot.schedule import Job

        if isinstance(job, str):
            owner = bot or (self._bots[-1][0] if self._bots else None)
            if owner is None:
                raise AssertionError("run_job(key) needs a running bot")
            job = owner.jobs[job]
        elif not isinstance(job, Job):
            job = getattr(job, "job", None)
            if not isinstance(job, Job):
                raise AssertionError("run_job() takes a scheduled handler, a Job or a job key")
        await job.run_now()

    async def stop_bot(self, bot: Bot, *, timeout: float = 15.0) -> None:
        """Stop a bot like SIGTERM would (grace period, on_shutdown) and wait for it."""
        for entry in list(self._bots):
            if entry[0] is bot:
                self._bots.remove(entry)
                _, task, client = entry
                bot.stop()
                try:
                    async with asyncio.timeout(timeout):
                        await task
                finally:
                    with contextlib.suppress(Exception):
                        await client.aclose()

    # -- acting as users ---------------------------------------------------

    async def send(
        self,
        text: str,
        *,
        channel: int | str = "general",
        as_user: str = "alice",
        thread_id: int | None = None,
    ) -> Chat:
        """Send a chat as ``as_user`` (registered on first use)."""
        client = await self.user(as_user)
        return await client.send_chat(channel, text, thread_id=thread_id)

    async def react(self, chat: Chat | int, reaction: str, *, as_user: str = "alice") -> None:
        client = await self.user(as_user)
        await client.react(chat.id if isinstance(chat, Chat) else chat, reaction)

    async def ask(
        self,
        text: str,
        *,
        channel: int | str = "general",
        as_user: str = "alice",
        thread_id: int | None = None,
        match: str | re.Pattern[str] | None = None,
        author: str | int | None = None,
        timeout: float | None = None,
    ) -> Chat:
        """Send ``text`` (see :meth:`send`) and return the reply (see :meth:`expect_reply`)."""
        chat = await self.send(text, channel=channel, as_user=as_user, thread_id=thread_id)
        return await self.expect_reply(chat, match=match, author=author, timeout=timeout)

    # -- expectations ------------------------------------------------------

    async def wait_for(
        self,
        predicate: Callable[[Event], bool],
        *,
        timeout: float | None = None,
        start: int = 0,
        what: str = "an event",
    ) -> Event:
        """The first recorded event (from index ``start``) that satisfies ``predicate``."""
        limit = self.default_timeout if timeout is None else timeout
        position = start
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limit):
                while True:
                    self._raise_handler_error()
                    while position < len(self.events):
                        ev = self.events[position]
                        position += 1
                        if predicate(ev):
                            return ev
                    self._wakeup = loop.create_future()
                    await self._wakeup
        except TimeoutError:
            self._raise_handler_error()
            raise AssertionError(
                f"no {what} within {limit:g} s; last events seen: {self._tail()}"
            ) from None

    def _tail(self) -> str:
        shown = []
        for ev in self.events[-5:]:
            if isinstance(ev, ChatSent):
                shown.append(f"chat by {ev.chat.author_id}: {ev.chat.content!r}")
            else:
                shown.append(ev.type)
        return "; ".join(shown) or "none"

    def _reply_predicate(
        self,
        to: Chat | None,
        match: str | re.Pattern[str] | None,
        author: str | int | None,
        channel: int | None,
    ) -> Callable[[Event], bool]:
        """A reply predicate (``channel`` already resolved to an id)."""
        if isinstance(author, str):
            author_id: int | None = self._ids.get(author)
            if author_id is None:
                raise ValueError(f"unknown user {author!r} (not registered through the harness)")
        else:
            author_id = author if author is not None else self._bot_user_id
        pattern = re.compile(match) if isinstance(match, str) else match
        channel_id = channel if channel is not None else (to.channel_id if to else None)

        def predicate(ev: Event) -> bool:
            if not isinstance(ev, ChatSent):
                return False
            c = ev.chat
            if to is not None and c.id <= to.id:
                return False
            if author_id is not None and c.author_id != author_id:
                return False
            if channel_id is not None and c.channel_id != channel_id:
                return False
            return pattern is None or pattern.search(c.content) is not None

        return predicate

    async def expect_reply(
        self,
        to: Chat | None = None,
        *,
        match: str | re.Pattern[str] | None = None,
        author: str | int | None = None,
        channel: int | str | None = None,
        timeout: float | None = None,
    ) -> Chat:
        """The next chat by the bot (or ``author``) after ``to``, in its channel.

        ``match`` is a regular expression the content must contain; ``channel``
        an id or a name (default: the channel of ``to``). Fails the test with
        the last events seen when nothing comes within ``timeout``.
        """
        predicate = self._reply_predicate(to, match, author, await self._channel_id(channel))
        what = "reply" + (f" matching {match!r}" if match else "")
        ev = await self.wait_for(predicate, timeout=timeout, what=what)
        assert isinstance(ev, ChatSent)
        return ev.chat

    async def expect_no_reply(
        self,
        to: Chat | None = None,
        *,
        within: float = 0.5,
        match: str | re.Pattern[str] | None = None,
        author: str | int | None = None,
        channel: int | str | None = None,
    ) -> None:
        """Fail if the bot (or ``author``) answers ``to`` within ``within`` seconds."""
        predicate = self._reply_predicate(to, match, author, await self._channel_id(channel))
        try:
            ev = await self.wait_for(predicate, timeout=within)
        except HandlerFailed:
            raise
        except AssertionError:
            self._raise_handler_error()
            return
        assert isinstance(ev, ChatSent)
        raise AssertionError(f"unexpected reply: {ev.chat.content!r}")

    async def _channel_id(self, channel: int | str | None) -> int | None:
        if channel is None or isinstance(channel, int):
            return channel
        if channel.strip().isdigit():
            return int(channel)
        client = await self.user("concord-harness")
        return await client.channel_id(channel)

    async def expect_reaction(
        self, chat: Chat | int, reaction: str, *, timeout: float | None = None
    ) -> None:
        """Wait until ``chat`` carries ``reaction``."""
        chat_id = chat.id if isinstance(chat, Chat) else chat

        def predicate(ev: Event) -> bool:
            return (
                isinstance(ev, ChatReactionsUpdated)
                and ev.chat_id == chat_id
                and ev.reactions.get(reaction, 0) > 0
            )

        await self.wait_for(predicate, timeout=timeout, what=f"reaction {reaction!r}")

    async def expect_event(
        self,
        event_type: str,
        predicate: Callable[[Any], bool] | None = None,
        *,
        timeout: float | None = None,
    ) -> Event:
        """The next event of ``event_type`` (wire name) satisfying ``predicate``."""
        return await self.wait_for(
            lambda ev: ev.type == event_type and (predicate is None or predicate(ev)),
            timeout=timeout,
            what=f"{event_type} event",
        )

    # -- fault injection ---------------------------------------------------

    async def drop_connections(self, code: int = 1012) -> None:
        """Close every websocket (bots and observer reconnect and recover chats)."""
        await self.server.drop_connections(code)

    def refuse_connections(self, seconds: float = 2.0) -> None:
        """Websocket handshakes fail with HTTP 503 for ``seconds``."""
        self.server.refuse_connections(seconds)

    async def send_raw(self, frame: bytes | str) -> None:
        """Send a raw frame to every connected client (malformed JSON, unknown types...)."""
        await self.server.broadcast_raw(frame)

    async def restart_server(self) -> None:
        """Stop and start the server on the same port and database."""
        await self.server.restart()


def _make_config() -> ServerConfig:
    from concordctl.server import ServerConfig

    return ServerConfig(
        host="127.0.0.1",
        port=0,
        db_path=":memory:",
        admin_password="admin-" + secrets.token_hex(8),
        online_delay=0.2,
        # Cheap password hashes (2**10: about 1 ms, not 0.1 s): a test server
        # registers and logs in users all the time, and guards nothing.
        password_cost=2**10,
        # A bot's tests make the channels they need as ordinary test users;
        # roles are the server's concern, tested in its own suite.
        open_channels=True,
    )


if _HAVE_PYTEST_ASYNCIO:
    import pytest_asyncio

    @pytest.fixture
    def concord_server_config() -> ServerConfig:
        """The embedded server's configuration; override to change it."""
        return _make_config()

    @pytest_asyncio.fixture
    async def concord_server(
        concord_server_config: ServerConfig,
    ) -> AsyncIterator[EmbeddedServer]:
        """A running embedded Concord server (127.0.0.1, port 0), one per test."""
        from concordctl.server import EmbeddedServer

        async with EmbeddedServer(concord_server_config) as server:
            yield server

    @pytest_asyncio.fixture
    async def concord_harness(concord_server: EmbeddedServer) -> AsyncIterator[Harness]:
        """A :class:`Harness` on ``concord_server``; bots and clients are closed after."""
        harness = Harness(concord_server)
        await harness.start()
        try:
            yield harness
        finally:
            await harness.close()

else:  # pragma: no cover

    @pytest.fixture
    def concord_harness() -> None:
        pytest.fail("concordctl.testing needs pytest-asyncio: pip install pytest-asyncio")
