"""Writing broadcast frames straight to uvicorn's sans-I/O websocket connection.

Through ASGI every event costs one ``send`` per client, hence one
``socket.send`` system call per client per event: that, not Python, is what
limits fan-out. When the connection is uvicorn's ``websockets-sansio``
protocol (the default), :class:`DirectWriter` frames all the events queued
for a client with the same ``websockets`` state machine uvicorn uses and
writes them with one ``transport.write``, as ``websockets.broadcast`` does.
It honours uvicorn's flow control (``writable``) and never writes after a
close. Anything else (another implementation, another uvicorn) falls back to
plain ASGI sends: :meth:`DirectWriter.attach` returns None.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import Protocol

__all__ = ["DirectWriter"]


class DirectWriter:
    __slots__ = ("_conn", "_proto", "_transport", "_writable")

    def __init__(
        self, proto: Any, conn: Protocol, transport: asyncio.WriteTransport, writable: asyncio.Event
    ) -> None:
        self._proto = proto
        self._conn = conn
        self._transport = transport
        self._writable = writable

    @classmethod
    def attach(cls, send: Any) -> DirectWriter | None:
        """A writer for the connection behind an ASGI ``send``; None if unknown."""
        proto = getattr(send, "__self__", None)
        if not isinstance(proto, WebSocketsSansIOProtocol):  # ours subclasses it
            return None
        conn = getattr(proto, "conn", None)
        transport = getattr(proto, "transport", None)
        writable = getattr(proto, "writable", None)
        if (
            not isinstance(conn, Protocol)
            or not isinstance(transport, asyncio.WriteTransport)
            or not isinstance(writable, asyncio.Event)
            or not hasattr(proto, "close_sent")
            or not hasattr(proto, "disconnected")
        ):
            return None
        return cls(proto, conn, transport, writable)

    @property
    def usable(self) -> bool:
        """False once a close was sent or the connection is gone."""
        return not (
            self._proto.close_sent or self._proto.disconnected or self._transport.is_closing()
        )

    @property
    def writable(self) -> bool:
        return self._writable.is_set()

    async def wait_writable(self) -> None:
        await self._writable.wait()

    def write(self, frames: Iterable[tuple[bool, bytes]]) -> None:
        """Frame ``(is_text, payload)`` pairs and write them in one go."""
        conn = self._conn
        for is_text, payload in frames:
            if is_text:
                conn.send_text(payload)
            else:
                conn.send_binary(payload)
        self._transport.write(b"".join(conn.data_to_send()))

    def abort(self) -> None:
        """Drop the connection without a closing handshake (a client that never reads)."""
        self._transport.abort()
