"""A tiny loopback TCP load balancer: each connection goes to the first backend
(in its order of preference) that accepts it, the way a load balancer with
health checks moves clients off a dead node. Only for tests, only 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib


class Balancer:
    """``async with Balancer([port_a, port_b]) as lb: lb.url``"""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        #: Which backend each accepted connection went to, in order.
        self.routed: list[int] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Balancer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            for port in self.ports:
                try:
                    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    continue
                self.routed.append(port)
                self._writers.add(up_writer)
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
                return
        finally:
            writer.transport.abort()
            self._writers.discard(writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side is gone (a killed node resets): drop both, as a balancer does.
            with contextlib.suppress(Exception):
                writer.transport.abort()
            self._writers.discard(writer)
