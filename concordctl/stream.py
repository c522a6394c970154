"""The live event stream: ``/client?token=`` over ``websockets``, kept alive.

``EventStream`` yields typed events (:mod:`concordctl.protocol`) for as long
as the caller iterates:

* It reconnects after any drop, forever, with capped exponential backoff and
  jitter. A handshake answered 401 renews the token (once per attempt) when
  credentials are known; only a definite authentication failure ends the
  stream (``NotAuthenticated``). ``on_state`` sees every state change as a
  :class:`StreamState`.
* Concord has no resume, so after each reconnect the stream asks
  ``GET /chats?after=...`` for the chats it missed (per channel when filtered,
  paging until an empty page), and yields first a :class:`~protocol.Gap`
  (``since``..``until``: edits, deletions, reactions and typing in that
  interval are lost) and then the missed chats, oldest first, as ``ChatSent``
  with ``recovered=True``. ``createdAt`` is the sender's clock, so the query
  starts ``recovery_margin`` seconds before the last moment the connection
  was known alive and the results are de-duplicated by chat id (also against
  the live chats that follow). ``since=`` (a chat id) or ``since_time=``
  (epoch ms) start the stream with that recovery. The decisions (what to ask,
  what to keep) are in :mod:`concordctl.recovery`, without I/O.
* Keepalive: while the consumer waits for events, a ping is sent every
  ``ping_interval`` seconds; no pong within ``ping_timeout`` closes the
  connection, so a silently dead connection is replaced within
  ``ping_interval + ping_timeout`` seconds.
* A malformed frame is logged (one warning per minute at most, with a count)
  and skipped; an unknown type is yielded as :class:`~protocol.UnknownEvent`.
  Since a malformed frame may have been a chat, the stream then recovers in
  place (at most once per ``bad_frame_interval`` seconds): a ``Gap`` with
  ``since == until`` and the chats it finds, before the live frames behind it.

Construction: ``EventStream(ws_url, get_token=..., hooks=StreamHooks(...),
options=StreamOptions(...), since=..., since_time=..., ssl=...)``.

* :class:`StreamOptions` is every tuning knob, frozen, with the defaults
  above (``ping_interval``, ``ping_timeout``, ``open_timeout``, ``backoff``,
  ``max_queue``, ``max_size``, ``recovery_margin``, ``recovery_page_size``,
  ``recovery_max_chats``, ``recovery_max_bytes``, ``seen_window``,
  ``bad_frame_interval``). ``StreamOptions.of(mapping, **overrides)`` builds
  one from plain keywords (``backoff`` may be a dict of ``Backoff``'s fields)
  and refuses an unknown name; that is how ``Client.events(**options)`` and
  ``Client(stream_options={...})`` reach it.
* :class:`StreamHooks` is everything the stream calls out to, each optional:
  the token renewal (``renew_token``, ``can_renew``), the REST calls used for
  recovery (``fetch_chats``, ``get_chat``), the channel filter
  (``resolve_channels``), ``on_dead_connection`` and ``on_state``.
* ``get_token`` is the one thing a stream cannot do without; ``since`` /
  ``since_time`` say where it starts; ``ssl`` is the TLS context.

Backpressure and its limit: there is no unbounded queue. Frames wait in
websockets' buffer (``max_queue`` frames, default 64, each at most
``max_size`` bytes, default 8 MiB) and in the kernel's socket buffers; when
they are full the stream stops reading the socket and TCP pushes back on the
server. While the consumer is stalled no keepalive ping is judged. A server
that gives up on a stalled client closes the connection; the stream then
reconnects when the consumer comes back and recovers the chats (with a Gap).
A frame larger than ``max_size`` closes the connection (code 1009) and is
handled the same way.

The hot path is one ``recv`` (bytes, no UTF-8 pass), one msgspec decode and a
set lookup per event: no task, queue hop, copy or log call per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from concordctl import protocol as p
from concordctl.backoff import Backoff
from concordctl.cursor import Recovery, StreamCursor
from concordctl.errors import (
    ConcordError,
    NotAuthenticated,
    RateLimited,
    Unreachable,
    redact_url,
)
from concordctl.ids import now_ms
from concordctl.recovery import (
    SNOWFLAKE_EPOCH_MS,
    FetchChats,
    SeenChats,
    recover_chats,
    recover_missed_chats,
    select_recovered,
    snowflake_id,
    snowflake_time,
)
from concordctl.streamstate import ConnectionState, StreamState, transition

__all__ = [
    "SNOWFLAKE_EPOCH_MS",
    "ConnectionState",
    "EventStream",
    "SeenChats",
    "StreamHooks",
    "StreamOptions",
    "StreamState",
    "WarnLimiter",
    "close_reason",
    "now_ms",
    "recover_missed_chats",
    "select_recovered",
    "snowflake_id",
    "snowflake_time",
]

log = logging.getLogger("concordctl.stream")


def close_reason(exc: ConnectionClosed) -> str:
    """One line for a closed connection: who closed it, code and reason."""
    if exc.rcvd is not None:
        frame, who = exc.rcvd, "server"
    elif exc.sent is not None:
        frame, who = exc.sent, "client"
    else:
        return "connection lost (no close frame)"
    reason = f" {frame.reason}" if frame.reason else ""
    return f"connection closed by the {who} ({frame.code}{reason})"


class WarnLimiter:
    """Log a warning at most once per ``interval`` seconds, counting the rest."""

    __slots__ = ("interval", "last", "suppressed")

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self.last = float("-inf")
        self.suppressed = 0

    def warn(self, logger: logging.Logger, msg: str, *args: object) -> bool:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return False
        if self.suppressed:
            msg += " (%d similar warnings suppressed)"
            args = (*args, self.suppressed)
        self.last, self.suppressed = now, 0
        logger.warning(msg, *args)
        return True


class _RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets' debug log prints the request line (``/client?token=...``)."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            msg = redact_url(msg)
            args = tuple(redact_url(a) if isinstance(a, str | bytes) else a for a in args)
            self.logger.log(level, msg, *args, **kwargs)


# Not only FrameError: msgspec lets UnicodeDecodeError out for invalid UTF-8
# in a string, and bad input must never end the stream.
_DECODE_ERRORS = (msgspec.DecodeError, RecursionError, UnicodeDecodeError)


def _default_backoff() -> Backoff:
    return Backoff(base=0.5, cap=30.0)


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """The stream's tuning knobs (see the module docstring for what each bounds)."""

    ping_interval: float = 20.0
    ping_timeout: float = 10.0
    open_timeout: float = 10.0
    backoff: Backoff = field(default_factory=_default_backoff)
    max_queue: int = 64
    max_size: int = 8 * 2**20
    recovery_margin: float = 120.0  # seconds before the connection was last known alive
    recovery_page_size: int = 100
    recovery_max_chats: int = 10_000
    recovery_max_bytes: int = 16 * 2**20
    seen_window: int = 10_000
    bad_frame_interval: float = 1.0

    @classmethod
    def of(
        cls, base: StreamOptions | Mapping[str, Any] | None = None, **overrides: Any
    ) -> StreamOptions:
        """Options from ``base`` (options or plain keywords) with ``overrides`` on top.

        ``backoff`` may be a :class:`~concordctl.backoff.Backoff` or a dict of
        its fields; an unknown name is a ``TypeError``, as a wrong keyword is.
        """
        start = base if isinstance(base, StreamOptions) else cls()
        values = {**(base if isinstance(base, Mapping) else {}), **overrides}
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown stream option(s): {', '.join(unknown)}")
        if isinstance(values.get("backoff"), Mapping):
            values["backoff"] = Backoff(**values["backoff"])
        return replace(start, **values)


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class StreamHooks:
    """What the stream calls out to; every hook is optional.

    ``renew_token(stale)`` forces a new token or raises ``NotAuthenticated``,
    and is tried on a 401 handshake when ``can_renew()``; ``fetch_chats`` and
    ``get_chat`` are the REST calls used for recovery (without them the stream
    announces gaps but recovers nothing); ``resolve_channels()`` gives the
    channel ids to keep (None: all); ``on_dead_connection()`` runs after a
    connection was found silently dead; ``on_state`` sees every state change.
    """

    renew_token: Callable[[str], Awaitable[str]] | None = None
    can_renew: Callable[[], bool] = _never
    fetch_chats: FetchChats | None = None
    get_chat: Callable[[int], Awaitable[p.Chat]] | None = None
    resolve_channels: Callable[[], Awaitable[Sequence[int] | None]] | None = None
    on_dead_connection: Callable[[], Awaitable[None]] | None = None
    on_state: Callable[[StreamState], object] | None = None


class _RecoveryFailed(Exception):
    """Recovery after a reconnect failed for a reason worth reconnecting over."""


class EventStream:
    """An async iterable of events; see the module docstring. Iterate once.

    ``get_token()`` returns a current token (logging in if needed); ``hooks``
    and ``options`` are :class:`StreamHooks` and :class:`StreamOptions`.
    """

    def __init__(
        self,
        ws_url: str,
        *,
        get_token: Callable[[], Awaitable[str]],
        hooks: StreamHooks | None = None,
        options: StreamOptions | None = None,
        since: int | None = None,
        since_time: int | None = None,
        ssl: Any = None,
    ) -> None:
        self.ws_url = ws_url
        self._get_token = get_token
        self.hooks = hooks = hooks or StreamHooks()
        self.options = options = options or StreamOptions()
        self._fetch_chats = hooks.fetch_chats
        self._ssl = ssl
        # Every decision about frames (seen, recovery, gaps, filters) is the cursor's.
        self.cursor = StreamCursor(
            since=since,
            since_time=since_time,
            margin_ms=int(options.recovery_margin * 1000),
            window=options.seen_window,
        )
        self._found_dead = False
        self._last_in_place = float("-inf")
        self._channel_list: list[int] | None = None  # recovery asks per channel, in order
        self._ws: ClientConnection | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._attempts = 0  # connection attempts before the current socket
        self._bad_frames = WarnLimiter()
        self._error: str | None = None  # why the last connection or attempt ended
        self._iterating = False
        self._closed = False
        self._closing = asyncio.Event()
        self._gen: AsyncIterator[p.Event] | None = None
        self.state = StreamState(ConnectionState.CONNECTING)  # before the first attempt
        self.reconnects = 0

    def __repr__(self) -> str:
        return f"EventStream(url={redact_url(self.ws_url)!r}, state={str(self.state.state)!r})"

    def __aiter__(self) -> AsyncIterator[p.Event]:
        if self._gen is None:
            if self._iterating:
                raise RuntimeError("an EventStream can be iterated only once")
            self._iterating = True
            self._gen = self._events()
        return self._gen

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the stream and close its connection (idempotent)."""
        self._closed = True
        self._closing.set()
        gen, self._gen = self._gen, None
        if gen is not None:
            with contextlib.suppress(RuntimeError):  # already running elsewhere
                await gen.aclose()  # type: ignore[attr-defined]
        await self._drop_connection()
        if self.state.state != "closed":
            self._set_state(StreamState(ConnectionState.CLOSED))

    @property
    def connected(self) -> bool:
        ws = self._ws
        return ws is not None and ws.protocol.state.name == "OPEN"

    async def send_frame(self, frame: p.ClientFrame) -> None:
        """Send a client frame over the open socket (Unreachable if none)."""
        ws = self._ws
        if ws is None or not self.connected:
            raise Unreachable(
                "the event stream is not connected", hint="retry when it is, or use REST"
            )
        try:
            await ws.send(p.encode_client_frame(frame).decode())
        except ConnectionClosed as exc:
            raise Unreachable(
                f"the event stream closed while sending ({exc})", hint="retry or use REST"
            ) from None

    # ------------------------------------------------------------------
    # States
    # ------------------------------------------------------------------

    def _set_state(self, state: StreamState) -> None:
        self.state = transition(self.state, state)
        log.info(
            "stream %s%s%s%s",
            state.state,
            f" attempt {state.attempt}" if state.attempt else "",
            f" in {state.delay:.2f} s" if state.delay is not None else "",
            f" ({state.error})" if state.error else "",
        )
        if self.hooks.on_state is not None:
            try:
                self.hooks.on_state(state)
            except Exception:
                log.exception("on_state callback failed")

    # ------------------------------------------------------------------
    # Connecting
    # ------------------------------------------------------------------

    async def _open(self, token: str) -> ClientConnection:
        return await websockets.connect(
            f"{self.ws_url}?token={token}",  # the token must be the last parameter
            ssl=self._ssl,
            open_timeout=self.options.open_timeout,
            ping_interval=None,  # our own keepalive, which knows a stalled consumer
            close_timeout=2.0,
            max_size=self.options.max_size,
            max_queue=self.options.max_queue,
            compression=None,  # no permessage-deflate: a small frame cannot inflate to GBs
            proxy=None,
            logger=_RedactingLogger(logging.getLogger("concordctl.stream.ws"), {}),
            user_agent_header="concordctl",
        )

    async def _attempt(self) -> ClientConnection:
        """One connection attempt, renewing the token once on a 401 handshake."""
        token = await self._get_token()
        try:
            return await self._open(token)
        except InvalidStatus as exc:
            if exc.response.status_code != 401:
                raise
        renew = self.hooks.renew_token
        if renew is None or not self.hooks.can_renew():
            raise NotAuthenticated(
                "the event stream was refused: the token is expired or invalid",
                hint="run 'concordctl login' or set a fresh CONCORD_TOKEN",
                status=401,
            )
        log.info("websocket handshake got 401; renewing the token")
        token = await renew(token)
        try:
            return await self._open(token)
        except InvalidStatus as exc:
            if exc.response.status_code == 401:
                raise NotAuthenticated(
                    "the event stream was refused even with a fresh token",
                    hint="check the user's credentials and the server",
                    status=401,
                ) from None
            raise

    async def connect_once(self) -> ClientConnection:
        """One connection (no retries), for a caller that sends a frame and leaves."""
        try:
            return await self._attempt()
        except InvalidStatus as exc:
            raise Unreachable(
                f"websocket {redact_url(self.ws_url)} refused: HTTP {exc.response.status_code}",
                hint="retry later",
            ) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise Unreachable(
                f"cannot open websocket {redact_url(self.ws_url)}: {type(exc).__name__}",
                hint="is the server running? check --server",
            ) from None

    async def _connect(self, first: bool, error: str | None) -> ClientConnection | None:
        """Connect, retrying forever; raises only NotAuthenticated. None: closed."""
        attempt = 0
        at_least = 0.0
        while True:
            if self._closed:
                return None
            if attempt or not first:
                delay = max(self.options.backoff.delay(attempt), at_least)
                attempt += 1
                self._set_state(StreamState(ConnectionState.RECONNECTING, attempt, delay, error))
                # Woken early by aclose(), so closing never waits out a backoff.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._closing.wait()
                if self._closing.is_set():
                    return None
            else:
                attempt += 1
                self._set_state(StreamState(ConnectionState.CONNECTING, attempt))
            try:
                ws = await self._attempt()
            except NotAuthenticated:
                raise
            except RateLimited as exc:  # logging in too often: wait as told
                error = str(exc)
                at_least = min(exc.retry_after or 0.0, 300.0)
            except InvalidStatus as exc:
                error = f"handshake answered HTTP {exc.response.status_code}"
            except (OSError, TimeoutError, InvalidHandshake, ConcordError) as exc:
                error = redact_url(f"{type(exc).__name__}: {exc}".strip(": "))
            else:
                if self._closing.is_set():  # closed while the handshake ran
                    await ws.close()
                    return None
                self._ws = ws
                self._attempts = attempt
                self._keepalive_task = asyncio.get_running_loop().create_task(self._keepalive(ws))
                return ws

    async def _drop_connection(self) -> None:
        task, self._keepalive_task = self._keepalive_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _keepalive(self, ws: ClientConnection) -> None:
        """Ping while the consumer waits; close a connection that stays silent."""
        interval, timeout = self.options.ping_interval, self.options.ping_timeout
        while True:
            await asyncio.sleep(interval)
            transport = ws.transport
            if transport is None or transport.is_closing():
                return
            if not transport.is_reading():
                # The consumer is behind and websockets paused the socket: a
                # pong could not be read now, which says nothing about the
                # connection. Judge it once the consumer has caught up.
                continue
            sent = now_ms()
            try:
                pong = await ws.ping()
                async with asyncio.timeout(timeout):
                    await pong
            except TimeoutError:
                log.warning("no pong within %.1f s: replacing the connection", timeout)
                self._found_dead = True
                transport.abort()
                return
            except ConnectionClosed:
                return
            self.cursor.alive(sent)

    # ------------------------------------------------------------------
    # Recovery (what to ask and keep is the cursor's; this only fetches)
    # ------------------------------------------------------------------

    @property
    def seen(self) -> SeenChats:
        """The ids already yielded (the cursor's)."""
        return self.cursor.seen

    async def _fetch_page(
        self, *, channel_id: int | None, after: int, page: int, size: int
    ) -> list[p.Chat]:
        assert self._fetch_chats is not None
        return await self._fetch_chats(channel_id=channel_id, after=after, page=page, size=size)

    async def _recover(self, recovery: Recovery) -> list[p.Event]:
        """The Gap and the recovered chats; _RecoveryFailed when REST failed."""
        if self._fetch_chats is None:
            return self.cursor.recovered(recovery, [])
        try:
            found = await recover_chats(
                self._fetch_page,
                after=recovery.after,
                channel_ids=self._channel_list,
                page_size=self.options.recovery_page_size,
                max_chats=self.options.recovery_max_chats,
                max_bytes=self.options.recovery_max_bytes,
            )
        except NotAuthenticated:
            raise
        except ConcordError as exc:
            raise _RecoveryFailed(str(exc)) from None
        return self.cursor.recovered(recovery, found.chats, complete=found.complete)

    async def _recover_in_place(self) -> list[p.Event]:
        """Recovery after a malformed frame, at most once per interval.

        A server sending garbage gets throttled here (the consumer waits)
        rather than answered with a REST query per frame.
        """
        wait = self._last_in_place + self.options.bad_frame_interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_in_place = time.monotonic()
        recovery = self.cursor.lost_frame(now_ms())
        try:
            return await self._recover(recovery)
        except _RecoveryFailed as exc:
            log.warning("recovery after a malformed frame failed: %s", exc)
            return [p.Gap(since=recovery.since, until=recovery.until)]

    async def _slow_frame(self, data: bytes | str) -> list[p.Event]:
        """A frame the fast decoder refused: an unknown type, or malformed (then recover)."""
        try:
            event = p.decode_event(data)
        except p.FrameError as exc:
            self._bad_frames.warn(
                log, "skipped a malformed frame (%d bytes): %s", len(data), str(exc)[:200]
            )
            if self._fetch_chats is None:
                return []
            # It may have been a chat: recover in place, before the live frames
            # behind it, so order holds; what else it was is lost, as the Gap says.
            return await self._recover_in_place()
        return [event] if self.cursor.keeps(event) else []

    async def _prepare(self) -> None:
        """Before the first connection: resolve channel names, read the cursor's time."""
        if self.hooks.resolve_channels is not None:
            ids = await self.hooks.resolve_channels()
            if ids is not None:
                self._channel_list = list(dict.fromkeys(ids))
                self.cursor.set_channels(self._channel_list)
        since = self.cursor.since
        created_at = None
        get_chat = self.hooks.get_chat
        if since is not None and get_chat is not None:
            try:
                created_at = (await get_chat(since)).created_at
            except ConcordError as exc:  # deleted meanwhile: the id's time will do
                log.info("cursor chat %d: %s; using the time in its id", since, exc)
        self.cursor.start(created_at)

    # ------------------------------------------------------------------
    # The iteration
    # ------------------------------------------------------------------

    def _start_boundary(self, ws: ClientConnection) -> int:
        """The largest chat id that predates a stream started without a cursor.

        From the server's clock (the handshake's Date header, 1 s resolution)
        unless ours agrees with it, since ids carry the server's time.
        """
        local = now_ms()
        when = local
        date = ws.response.headers.get("Date") if ws.response is not None else None
        if date:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                server = int(email.utils.parsedate_to_datetime(date).timestamp() * 1000)
                if abs(server + 500 - local) > 1500:
                    when = server
        return snowflake_id(when)

    async def _open_session(self, ws: ClientConnection) -> list[p.Event] | None:
        """A socket is open: the recovery's events to yield first; None: reconnect."""
        recovery = self.cursor.connected(now_ms(), self._start_boundary(ws))
        if self.cursor.connections > 1:
            self.reconnects += 1
        events: list[p.Event] = []
        if recovery is not None:
            self._set_state(StreamState(ConnectionState.RECOVERING, self._attempts))
            try:
                events = await self._recover(recovery)
            except _RecoveryFailed as exc:
                self._error = f"recovery failed: {exc}"
                log.warning("%s; reconnecting", self._error)
                await self._drop_connection()
                return None
        self._set_state(StreamState(ConnectionState.LIVE, self._attempts))
        return events

    async def _events(self) -> AsyncIterator[p.Event]:
        try:
            await self._prepare()
            self._error = None
            # Locals for the per-event loop below, which is what the benchmark measures.
            fast_decode = p.decode_known_event  # anything else: _slow_frame
            chat_sent = p.ChatSent
            admit = self.cursor.admit
            keeps = self.cursor.keeps
            while True:
                ws = await self._connect(self.cursor.connections == 0, self._error)
                if ws is None:
                    return
                first_events = await self._open_session(ws)
                if first_events is None:
                    continue
                for event in first_events:
                    yield event
                recv = ws.recv
                try:
                    while True:
                        data = await recv(False)
                        try:
                            ev = fast_decode(data)
                        except _DECODE_ERRORS:
                            for event in await self._slow_frame(data):
                                yield event
                            continue
                        if ev.__class__ is chat_sent:
                            if not admit(ev.chat):
                                continue
                        elif not keeps(ev):
                            continue
                        yield ev
                except ConnectionClosed as exc:
                    self._error = close_reason(exc)
                await self._session_ended()
        finally:
            self._closed = True
            await self._drop_connection()
            if self.state.state != ConnectionState.CLOSED:
                self._set_state(StreamState(ConnectionState.CLOSED))

    async def _session_ended(self) -> None:
        self.cursor.disconnected()
        await self._drop_connection()
        on_dead = self.hooks.on_dead_connection
        if self._found_dead and on_dead is not None:
            # The network path went silent: pooled REST connections over it
            # are likely dead too, and recovery must not wait on them.
            self._found_dead = False
            try:
                await on_dead()
            except Exception:
                log.exception("on_dead_connection hook failed")
