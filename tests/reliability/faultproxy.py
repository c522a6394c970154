"""A TCP proxy that misbehaves on command, for fault-injection tests.

It sits between a client and a server on 127.0.0.1 (its own port is chosen by
the system) and forwards bytes both ways until a test tells it to:

* ``await cut()``: close every live connection at once (RST by default, the
  way a crashed router or a killed server looks; ``reset=False`` sends FIN);
* ``stall()`` / ``resume()``: stop forwarding without closing anything, so
  both ends see a silent, open socket (a NAT that forgot the flow, a frozen
  peer). ``stall(existing_only=True)`` freezes only the connections open now
  and lets new ones through, which is what a reconnecting client meets;
* ``drop_bytes(n)``: delete ``n`` bytes from the middle of the next chunk in
  one direction, so a websocket or HTTP frame arrives corrupted (and the
  framing after it is lost);
* ``corrupt_bytes(n)``: overwrite ``n`` bytes in the middle of the next chunk
  with ``#``, keeping its length: the framing survives, the payload does not;
* ``cut_mid_response(keep, request=b"POST /api/...")``: forward only ``keep``
  bytes of the next chunk from the server (on the connection that sent a
  request starting with ``request``, if given), then reset that connection:
  a response cut in half;
* ``await refuse(seconds)``: stop listening, so connects get ECONNREFUSED,
  then listen again on the same port.

Only asyncio streams: it runs in the test's own event loop, next to an
in-process EmbeddedServer or in front of a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["up", "down"]  # up: client to server; down: server to client

_CHUNK = 65536


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream twin."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    cut_down_after: int | None = None  # cut the next downstream chunk to this size
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self, reset: bool) -> None:
        for writer in (self.client, self.upstream):
            if reset:
                _set_linger_zero(writer)
                writer.transport.abort()
            else:
                writer.close()


def _set_linger_zero(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER 0 makes close() send RST instead of FIN: the peer's next read
    # fails with ECONNRESET instead of a clean end of stream.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )


class FaultProxy:
    """Forward 127.0.0.1:``port`` to ``target_host``:``target_port``, with faults."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.accepted = 0  # connections accepted since start
        self.bytes_forwarded: dict[Direction, int] = {"up": 0, "down": 0}
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._stall_new = False
        self._drops: dict[Direction, list[int]] = {"up": [], "down": []}
        self._corruptions: dict[Direction, list[int]] = {"up": [], "down": []}
        self._cut_after: list[tuple[int, bytes]] = []
        self._reopen: asyncio.Task[None] | None = None
        self._held: socket.socket | None = None  # the port, while refusing
        self._closed = False
        self._accepted_changed = asyncio.Condition()

    # ----------------------------------------------------------------- life

    async def start(self) -> FaultProxy:
        await self._listen()
        return self

    async def close(self) -> None:
        self._closed = True
        if self._reopen is not None:
            self._reopen.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reopen
        await self._stop_listening()
        if self._held is not None:
            self._held.close()
            self._held = None
        await self.cut()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def live_connections(self) -> int:
        """Connections forwarded now (accepted and joined to the upstream)."""
        return len(self._links)

    @property
    def listening(self) -> bool:
        """Whether new connections are accepted (False during a ``refuse``)."""
        return self._server is not None

    async def wait_for_accepted(self, count: int, within: float = 10.0) -> None:
        """Wait until ``count`` connections have been accepted in total."""
        async with asyncio.timeout(within), self._accepted_changed:
            await self._accepted_changed.wait_for(lambda: self.accepted >= count)

    # --------------------------------------------------------------- faults

    async def cut(self, *, reset: bool = True) -> int:
        """Close every live connection now; returns how many were cut."""
        links = list(self._links)
        for link in links:
            link.abort(reset)
        for link in links:
            await self._finish(link)
        return len(links)

    def stall(self, *, existing_only: bool = False) -> None:
        """Stop forwarding, leaving every socket open."""
        for link in self._links:
            link.flowing.clear()
        self._stall_new = not existing_only

    def resume(self) -> None:
        self._stall_new = False
        for link in self._links:
            link.flowing.set()

    def drop_bytes(self, count: int = 7, *, direction: Direction = "down") -> None:
        """Delete ``count`` bytes from the middle of the next chunk going ``direction``."""
        self._drops[direction].append(count)

    def corrupt_bytes(self, count: int = 4, *, direction: Direction = "down") -> None:
        """Overwrite ``count`` bytes in the middle of the next chunk going ``direction``."""
        self._corruptions[direction].append(count)

    def cut_mid_response(self, keep: int = 16, request: bytes = b"") -> None:
        """Forward ``keep`` bytes of the next server chunk, then reset that connection.

        With ``request``, only the answer to the next request that starts
        with those bytes (``b"POST /api/channels/"``) is cut.
        """
        self._cut_after.append((keep, request))

    async def refuse(self, seconds: float) -> None:
        """Stop accepting (connects are refused), listen again after ``seconds``.

        The port stays bound meanwhile by a socket that does not listen (the
        kernel refuses connects to it), so nothing else can take it: an
        outgoing connection of another test picking it as its ephemeral port
        once made the reopening fail with EADDRINUSE.
        """
        self._held = self._bind()
        await self._stop_listening()

        async def reopen() -> None:
            await asyncio.sleep(seconds)  # the scenario: an outage of that many seconds
            if not self._closed:
                await self._listen()

        self._reopen = asyncio.get_running_loop().create_task(reopen())

    async def accept_again(self) -> None:
        """End a ``refuse`` early (or wait for its reopening)."""
        if self._reopen is not None:
            self._reopen.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reopen
            self._reopen = None
        if self._server is None:
            await self._listen()

    # ------------------------------------------------------------ internals

    def _bind(self) -> socket.socket:
        # SO_REUSEPORT lets the held socket share the port with the listening
        # one for the moment between binding it and closing the listener.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", self.port))
        except BaseException:
            sock.close()
            raise
        return sock

    async def _listen(self) -> None:
        # Same port again after a refuse(): clients keep their URL.
        sock, self._held = self._held or self._bind(), None
        sock.listen(128)
        sock.setblocking(False)
        self._server = await asyncio.start_server(self._accept, sock=sock)
        self.port = sock.getsockname()[1]

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            # wait_closed() would wait for our own handlers; connections are
            # ours to manage, so only the listening socket is closed here.

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        async with self._accepted_changed:
            self._accepted_changed.notify_all()
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            _set_linger_zero(writer)
            writer.transport.abort()
            return
        link = _Link(client=writer, upstream=up_writer)
        if not self._stall_new:
            link.flowing.set()
        self._links.add(link)
        loop = asyncio.get_running_loop()
        link.tasks = [
            loop.create_task(self._pump(link, reader, up_writer, "up")),
            loop.create_task(self._pump(link, up_reader, writer, "down")),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        await self._finish(link)

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
    ) -> None:
        try:
            while True:
                await link.flowing.wait()
                data = await reader.read(_CHUNK)
                # A stall may have begun during the read: hold the data, or
                # the end of stream, until it is over (a dead network passes
                # on neither).
                await link.flowing.wait()
                if not data:
                    break
                data, cut_now = self._mangle(link, data, direction)
                writer.write(data)
                self.bytes_forwarded[direction] += len(data)
                await writer.drain()
                if cut_now:
                    link.abort(reset=True)
                    return
        except OSError:
            # A reset on one side: reset the other too, as a router would.
            link.abort(reset=True)
            return
        # A clean end of stream: pass the half-close on and let the other
        # direction finish on its own (a response may still be coming).
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()

    def _mangle(self, link: _Link, data: bytes, direction: Direction) -> tuple[bytes, bool]:
        drops = self._drops[direction]
        if drops and len(data) >= 2:
            count = drops.pop(0)
            middle = len(data) // 2
            data = data[:middle] + data[middle + count :]
        corruptions = self._corruptions[direction]
        if corruptions and len(data) >= 2:
            count = min(corruptions.pop(0), len(data) // 2)
            middle = len(data) // 2
            data = data[:middle] + b"#" * count + data[middle + count :]
        if self._cut_after:
            keep, request = self._cut_after[0]
            if direction == "up" and request and data.startswith(request):
                self._cut_after.pop(0)
                link.cut_down_after = keep
            elif direction == "down" and not request:
                self._cut_after.pop(0)
                return data[:keep], True
        if direction == "down" and link.cut_down_after is not None:
            keep, link.cut_down_after = link.cut_down_after, None
            return data[:keep], True
        return data, False

    async def _finish(self, link: _Link) -> None:
        self._links.discard(link)
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current and not task.done():
                task.cancel()
        for task in link.tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
