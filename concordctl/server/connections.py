"""uvicorn's connection protocols with this server's limits on every connection.

uvicorn gives each accepted socket an HTTP protocol object, replaced by a
websocket one on upgrade. We subclass both, because what they leave
unbounded happens below the ASGI app, where no middleware sees it:

* **Open connections** (``max_connections``): one more is answered 503 and
  closed at once, with one warning line (at most one a second) saying how to
  raise the limit; the ones already open are served as before.
* **Headers** (``http_header_timeout``): a request's headers must be complete
  this many seconds after the connection opened or the request's first byte
  came; otherwise 408 and the connection is closed (slowloris). Idle
  keep-alive connections are closed after ``http_idle_timeout``
  (uvicorn's keep-alive timer). The body's deadline is in ``app.py``.
* **A websocket's outgoing buffer** (``ws_buffer_bytes``): the pongs uvicorn
  writes for a client's pings bypass every queue, so a client that pings and
  never reads grew the server without bound. Past the limit the socket is
  closed as a slow reader is (4008), and dropped if even that cannot be
  delivered within ``ws_close_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.config import HTTP_PROTOCOLS, WS_PROTOCOLS
from uvicorn.importer import import_from_string
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from concordctl.server.config import ServerConfig
from concordctl.server.hub import SLOW_CLIENT_CODE, SLOW_CLIENT_REASON

__all__ = ["http_protocol", "websocket_protocol"]

log = logging.getLogger("concordctl.server")

_REFUSED_BODY = b'{"status":503,"error":"Service Unavailable","message":"too many connections"}'
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
    + str(len(_REFUSED_BODY)).encode()
    + b"\r\n\r\n"
    + _REFUSED_BODY
)
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
#: Seconds between two "refusing connections" log lines.
_REFUSAL_LOG_INTERVAL = 1.0


class _Refusals:
    """Counts refused connections so the log says it once a second, not per socket."""

    def __init__(self) -> None:
        self.logged_at = -_REFUSAL_LOG_INTERVAL
        self.unlogged = 0

    def note(self, client: str, open_now: int, limit: int) -> None:
        self.unlogged += 1
        now = time.monotonic()
        if now - self.logged_at < _REFUSAL_LOG_INTERVAL:
            return
        log.warning(
            "refusing connections (%d since the last line, latest from %s): %d open, "
            "the limit is max_connections=%d (ServerConfig.max_connections)",
            self.unlogged,
            client,
            open_now,
            limit,
        )
        self.logged_at, self.unlogged = now, 0


class _GuardedHTTP:
    """Mixed in before uvicorn's HTTP protocol (h11 or httptools)."""

    # Set on the class ``http_protocol`` makes.
    max_connections: int
    header_timeout: float
    refusals: _Refusals

    # uvicorn's attributes we rely on (both HTTP implementations have them).
    transport: asyncio.Transport
    connections: set[Any]
    cycle: Any
    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: asyncio.Transport) -> None:
        # Armed before uvicorn's own set-up, so every attribute our hooks read exists.
        self._refused = False
        self._header_timer: asyncio.TimerHandle | None = None
        if len(self.connections) >= self.max_connections:
            self._refused = True
            peer = transport.get_extra_info("peername")
            self.refusals.note(
                str(peer[0]) if peer else "?", len(self.connections), self.max_connections
            )
            transport.write(_REFUSED)
            transport.close()
            return
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._disarm_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._header_timer is None and self._between_requests():
            self._arm_header_timer()
        before = self.cycle
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not before or not self._still_http():
            self._disarm_header_timer()  # headers complete, or upgraded to a websocket

    def _still_http(self) -> bool:
        """False once uvicorn handed the transport to a websocket protocol."""
        protocol: object = self.transport.get_protocol()
        return protocol is self

    def _between_requests(self) -> bool:
        return self.cycle is None or bool(self.cycle.response_complete)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport.is_closing() or not self._still_http():
            return
        if not self._between_requests():
            return  # a request is being served: its headers did come
        transport.write(_TIMED_OUT)
        transport.close()


def http_protocol(config: ServerConfig) -> type[asyncio.Protocol] | str:
    """The HTTP protocol class for uvicorn: ``config.http_impl`` with the limits."""
    if config.http_impl not in ("h11", "httptools"):
        return config.http_impl
    base = import_from_string(HTTP_PROTOCOLS[config.http_impl])
    attributes = {
        "max_connections": max(1, config.max_connections),
        "header_timeout": config.http_header_timeout,
        "refusals": _Refusals(),
    }
    guarded: type[asyncio.Protocol] = type("GuardedHTTPProtocol", (_GuardedHTTP, base), attributes)
    return guarded


class BoundedWebSocketsProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O websocket, with the socket's write buffer bounded."""

    # Set on the class ``websocket_protocol`` makes.
    max_buffer_bytes: int = 4 * 1024 * 1024
    drop_after: float = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set once the buffer overflowed: no more pongs are written.
        self.overflowed = False

    def handle_ping(self) -> None:
        output = b"".join(self.conn.data_to_send())
        if self.overflowed:
            return
        if self.transport.get_write_buffer_size() + len(output) > self.max_buffer_bytes:
            self.overflow()
            return
        self.transport.write(output)

    def overflow(self) -> None:
        """Close the connection as for a slow reader; drop it if that cannot be sent."""
        if self.overflowed:
            return
        self.overflowed = True
        log.warning(
            "closing a websocket from %s: more than %d bytes wait to be sent (it does not read)",
            self.client[0] if self.client else "?",
            self.max_buffer_bytes,
        )
        if self.handshake_complete and not self.close_sent:
            self.queue.put_nowait(
                {"type": "websocket.disconnect", "code": SLOW_CLIENT_CODE, "reason": ""}
            )
            self.conn.send_close(SLOW_CLIENT_CODE, SLOW_CLIENT_REASON)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
        # Reading on (and discarding) until the client answers the close: a socket
        # closed with unread input is reset, and the close frame with it.
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(self.drop_after, self.transport.abort)


def websocket_protocol(config: ServerConfig) -> type[asyncio.Protocol] | str:
    """The websocket protocol class for uvicorn: ``config.ws_impl`` with the limits.

    Only the sans-I/O implementation needs it: the legacy ``websockets`` one
    waits for its writes to drain before it reads on (so a ping flood stalls,
    bounded), and ``wsproto`` is not installed with concordctl.
    """
    if WS_PROTOCOLS.get(config.ws_impl) != WS_PROTOCOLS["websockets-sansio"]:
        return config.ws_impl
    attributes = {
        "max_buffer_bytes": config.ws_buffer_bytes,
        "drop_after": config.ws_close_timeout,
    }
    return type("BoundedWebSocketsProtocol", (BoundedWebSocketsProtocol,), attributes)
