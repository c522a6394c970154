"""Running the embedded server: in the current event loop, or in a thread.

:class:`EmbeddedServer` owns the database, the signing key, the hub and one
uvicorn server on a socket it binds itself (so a port in use raises
``OSError`` instead of uvicorn's ``sys.exit``). The listening socket is kept
across :meth:`EmbeddedServer.restart` (uvicorn gets a duplicate to close), so
the port cannot be taken by anyone else meanwhile: connections made during a
restart wait in the backlog and are served by the new uvicorn.
It also has the fault-injection hooks that tests and the bot plugin use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import uvicorn

from concordctl.errors import redact_url
from concordctl.server import auth, connections
from concordctl.server.app import build_app
from concordctl.server.config import ServerConfig, key_path_for
from concordctl.server.state import ServerState
from concordctl.server.store import Store

__all__ = ["EmbeddedServer", "ServerThread"]

log = logging.getLogger("concordctl.server")
T = TypeVar("T")

SHUTDOWN_CODE = 1001
RESTART_CODE = 1012


class _UvicornLogFilter(logging.Filter):
    """Keep uvicorn's own log lines free of tokens and of noise.

    uvicorn logs each websocket handshake with its query string (the token):
    those lines are dropped (our access log has them, redacted), and anything
    else is redacted too. Its sans-I/O websocket also logs an error after
    every handshake we refuse on purpose (401, 503) through the denial
    extension; that line is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "without completing handshake" in message or '"WebSocket ' in message:
            return False
        record.msg, record.args = redact_url(message), ()
        return True


for _name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
    logging.getLogger(_name).addFilter(_UvicornLogFilter())


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handling: the owner of the loop decides."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so,
    # and without it every response pays a 40 ms delayed-ACK stall.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(256)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class EmbeddedServer:
    """A Concord-compatible server in this process's event loop.

    ``async with EmbeddedServer(ServerConfig()) as server: server.url``
    """

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.admin_password: str | None = None
        self.port: int = self.config.port
        self._state: ServerState | None = None
        self._uvicorn: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self._listener: socket.socket | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        scheme = "https" if self.config.ssl_certfile else "http"
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/client"

    @property
    def state(self) -> ServerState:
        if self._state is None:
            raise RuntimeError("the server is not started")
        return self._state

    @property
    def store(self) -> Store:
        return self.state.store

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self._state is None:
            self._state = await asyncio.to_thread(self._open)
            try:
                await self._serve()
            except BaseException:
                self._close_listener()
                self._state.store.close()
                self._state = None
                raise
        else:
            await self._serve()

    def _open(self) -> ServerState:
        """Open (and on first start seed) the database and the signing key."""
        cfg = self.config
        db = str(cfg.db_path)
        if db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        store = Store(db)
        try:
            key = auth.load_or_create_key(key_path_for(db))
            if not store.is_seeded():
                password = cfg.admin_password or auth.random_password()
                store.seed(auth.hash_password(password))
                self.admin_password = password
        except BaseException:
            store.close()
            raise
        return ServerState(
            config=cfg, store=store, signer=auth.TokenSigner(key, cfg.token_validity_seconds)
        )

    async def _serve(self) -> None:
        state = self.state
        state.shutting_down = False
        cfg = self.config
        if self._listener is None:
            self._listener = _bind(cfg.host, self.port)
            self.port = self._listener.getsockname()[1]
        sock = self._listener.dup()  # uvicorn closes this one when it stops
        uv_config = uvicorn.Config(
            build_app(state),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            ws=connections.websocket_protocol(cfg),
            http=connections.http_protocol(cfg),
            timeout_keep_alive=max(1, round(cfg.http_idle_timeout)),
            ws_max_size=cfg.ws_max_message_bytes,
            ws_per_message_deflate=False,
            # uvicorn believes X-Forwarded-For from 127.0.0.1 by default, which on a
            # loopback server is every client: only from the addresses configured.
            proxy_headers=bool(cfg.forwarded_allow_ips),
            forwarded_allow_ips=list(cfg.forwarded_allow_ips),
            ssl_certfile=cfg.ssl_certfile,
            ssl_keyfile=cfg.ssl_keyfile,
            timeout_graceful_shutdown=5,
        )
        server = _Uvicorn(uv_config)
        self._uvicorn = server
        self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # raises what went wrong
                raise RuntimeError("the embedded server failed to start")
            await asyncio.sleep(0.005)

    async def _halt(self, code: int, reason: str) -> None:
        """Close every websocket with ``code``, then stop uvicorn."""
        state = self.state
        state.shutting_down = True
        await state.hub.close_all(code, reason)
        if self._uvicorn is not None and self._task is not None:
            self._uvicorn.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._uvicorn = None
        self._task = None

    async def stop(self) -> None:
        """Close websockets with 1001, stop serving and close the database."""
        if self._state is None:
            return
        try:
            if self._task is not None:
                await self._halt(SHUTDOWN_CODE, "server shutting down")
        finally:
            self._close_listener()
            self._state.store.close()
            self._state = None

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def restart(self) -> None:
        """Stop and start again on the same port and database (clients see 1012)."""
        await self._halt(RESTART_CODE, "server restarting")
        await self._serve()

    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, or until uvicorn stops by itself."""
        assert self._task is not None
        waiter = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    # ------------------------------------------------------ fault injection

    async def drop_connections(self, code: int = RESTART_CODE, reason: str = "dropped") -> None:
        """Close every websocket with ``code`` (clients are expected to reconnect)."""
        await self.state.hub.close_all(code, reason)

    def refuse_connections(self, seconds: float = 2.0) -> None:
        """Websocket handshakes get HTTP 503 for the next ``seconds``."""
        self.state.refuse_until = time.monotonic() + seconds

    async def broadcast_raw(self, data: bytes | str, *, binary: bool = False) -> None:
        """Send ``data`` unchanged to every client: a text frame, or binary if asked
        (or if the bytes are not UTF-8)."""
        frame: str | bytes
        if isinstance(data, str):
            frame = data.encode("utf-8") if binary else data
        elif binary:
            frame = data
        else:
            try:
                frame = data.decode("utf-8")
            except UnicodeDecodeError:
                frame = data
        self.state.hub.broadcast(frame)
        await asyncio.sleep(0)

    def connected_clients(self) -> int:
        return len(self.state.hub.subscribers)


class ServerThread:
    """An :class:`EmbeddedServer` in a background thread's loop, for sync code.

    ``with ServerThread(cfg) as server: server.url``; coroutine methods of the
    server run in its loop through :meth:`call`.
    """

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.server = EmbeddedServer(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def config(self) -> ServerConfig:
        return self.server.config

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    @property
    def admin_password(self) -> str | None:
        return self.server.admin_password

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def store(self) -> Store:
        return self.server.store

    def start(self) -> None:
        ready: Future[None] = Future()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as exc:
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(None)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="concord-server", daemon=True)
        self._thread.start()
        ready.result(timeout=60)

    def call(self, fn: Callable[..., Awaitable[T]] | Awaitable[T], *args: Any) -> T:
        """Run a coroutine function (or awaitable) in the server's loop; its result."""
        if self._loop is None:
            raise RuntimeError("the server thread is not running")

        async def run() -> T:
            return await (fn if not callable(fn) else fn(*args))

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=60)

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        try:
            self.call(self.server.stop)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop = None
            self._thread = None

    # Sync spellings of the fault hooks.
    def restart(self) -> None:
        self.call(self.server.restart)

    def drop_connections(self, code: int = RESTART_CODE) -> None:
        self.call(self.server.drop_connections, code)

    def refuse_connections(self, seconds: float = 2.0) -> None:
        async def refuse() -> None:
            self.server.refuse_connections(seconds)

        self.call(refuse)

    def broadcast_raw(self, data: bytes | str, *, binary: bool = False) -> None:
        async def send() -> None:
            await self.server.broadcast_raw(data, binary=binary)

        self.call(send)

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
