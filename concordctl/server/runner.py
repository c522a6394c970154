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
import os
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from concordctl.errors import redact_url
from concordctl.server import auth, connections
from concordctl.server.app import build_app
from concordctl.server.cluster import Cluster, ClusterError, tell_nodes_to_close
from concordctl.server.config import ServerConfig, display_db, is_postgres_url, key_path_for
from concordctl.server.hub import Hub
from concordctl.server.presence import Presence
from concordctl.server.state import ServerState
from concordctl.server.store import Store, StoreError, open_store

__all__ = ["EmbeddedServer", "ServerThread", "StartError", "check_db_path", "reset_admin_password"]

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
    """uvicorn without its signal handling: the owner of the loop decides.

    uvicorn looks at ``should_exit`` every 0.1 s, then its shutdown sleeps
    0.1 s and polls its connections every 0.1 s. :meth:`exit` wakes its loop
    and :meth:`shutdown` polls every 5 ms, so a stop (a ``restart``, every
    test's teardown) costs what closing costs, not 0.1-0.3 s.
    """

    #: How often shutdown looks whether the connections and tasks are done.
    _SHUTDOWN_POLL = 0.005

    _woken: asyncio.Event | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def exit(self) -> None:
        self.should_exit = True
        if self._woken is not None:
            self._woken.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's own shutdown (as of 0.54), polling every 5 ms instead of every 100."""
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                # uvicorn's sets of connections and tasks have no event to wait on.
                while (state.connections or state.tasks) and not self.force_exit:  # noqa: ASYNC110
                    await asyncio.sleep(self._SHUTDOWN_POLL)
                for server in self.servers:
                    await server.wait_closed()
        except TimeoutError:
            log.error("cancelling %d request(s) still running at shutdown", len(state.tasks))
            for task in state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def main_loop(self) -> None:
        self._woken = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):  # the date header, once a second
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), 0.1)


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


class StartError(Exception):
    """The server cannot start, found before anything was created; the message says why."""


def check_db_path(db: str | Path) -> None:
    """Raise :class:`StartError` unless ``db`` can be opened for writing.

    A missing parent directory is an error, never created: a typo in ``--db``
    must not leave a tree of directories behind.
    """
    text = str(db)
    if text == ":memory:" or is_postgres_url(text):
        return
    path = Path(text)
    parent = path.parent
    if not parent.is_dir():
        raise StartError(f"--db {text}: directory {parent} does not exist; create it first")
    if path.is_dir():
        raise StartError(f"--db {text} is a directory; give a file name")
    key = key_path_for(text)
    for target in (path, key):
        if target is not None and target.exists() and not os.access(target, os.W_OK | os.R_OK):
            raise StartError(f"--db {text}: {target} is not writable; check its permissions")
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise StartError(f"--db {text}: directory {parent} is not writable")


def check_tls(certfile: str | None, keyfile: str | None) -> None:
    """Raise :class:`StartError` unless the certificate and key load together."""
    if certfile is None:
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        detail = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise StartError(
            f"--tls-cert {certfile} / --tls-key {keyfile} cannot be used: {detail}"
        ) from None


class _AfterPublished:
    """Hold each HTTP response until what its request published has left this
    node (``Cluster.published``): an acknowledged chat is then in the database
    *and* announced to every node, whatever happens to this process next."""

    def __init__(self, app: ASGIApp, cluster: Cluster) -> None:
        self.app = app
        self.cluster = cluster

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cluster = self.cluster

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                await cluster.published()
            await send(message)

        await self.app(scope, receive, sending)


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
        #: This node's part in a server of several nodes (PostgreSQL), or None.
        self.cluster: Cluster | None = None
        #: Why the server stopped by itself (it lost its database), or None.
        self.failure: str | None = None
        self._failed = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The base URL clients use (``http(s)://host:port``); valid once started."""
        scheme = "https" if self.config.ssl_certfile else "http"
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The websocket URL without the ``?token=`` a client must append."""
        return self.url.replace("http", "ws", 1) + "/client"

    @property
    def state(self) -> ServerState:
        """The running server's shared state; RuntimeError before :meth:`start`."""
        if self._state is None:
            raise RuntimeError("the server is not started")
        return self._state

    @property
    def store(self) -> Store:
        """The storage backend (for tests that seed or inspect data)."""
        return self.state.store

    @property
    def node_id(self) -> int | None:
        """This node's number in the cluster (PostgreSQL); None on SQLite."""
        return self.cluster.node_id if self.cluster is not None else None

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop` while uvicorn serves."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Bind, check the TLS files and the database path, then open (and on first
        start seed) the database and serve.

        Everything that can fail for a reason the user must fix (a busy port:
        ``OSError``; a bad certificate or database path: :class:`StartError`)
        fails before the database or the admin user is created, so a one-time
        admin password is never made and lost.
        """
        if self._state is None:
            cfg = self.config
            check_tls(cfg.ssl_certfile, cfg.ssl_keyfile)
            check_db_path(cfg.db_path)
            if self._listener is None:
                self._listener = _bind(cfg.host, self.port)
                self.port = self._listener.getsockname()[1]
            hub, presence = Hub(), Presence()
            try:
                # Joined first: a taken --node-id must fail before the admin is seeded.
                await self._join(hub, presence.online)
                self._state = await self._open(hub, presence)
                if self.cluster is not None:
                    await self._attach(self.cluster, self._state)
            except BaseException:
                if self._state is not None:
                    await self._state.store.close()
                    self._state = None
                await self._leave()
                self._close_listener()
                raise
            try:
                await self._serve()
            except BaseException:
                self._close_listener()
                await self._state.store.close()
                self._state = None
                raise
        else:
            await self._serve()

    async def _join(self, hub: Hub, online: set[int]) -> None:
        url = self.config.cluster_url
        if url is None:
            return
        cluster = Cluster(url, hub, online, node_id=self.config.node_id)
        try:
            await cluster.start()
        except ClusterError as exc:
            raise StartError(str(exc)) from None
        cluster.on_lost = self._lose_database
        self.cluster = cluster

    async def _attach(self, cluster: Cluster, state: ServerState) -> None:
        """Make this node's state the cluster's: key, limits, fan-out (ids: ``_open``)."""
        pem = await cluster.signing_key_pem(auth.new_key_pem)
        state.signer = auth.TokenSigner(auth.key_from_pem(pem), state.signer.validity_seconds)
        for name, limiter in _login_limiters(state):
            cluster.share_limiter(name, limiter)
        state.fanout = cluster

    async def _leave(self) -> None:
        if self.cluster is not None:
            await self.cluster.stop()
            self.cluster = None

    def _lose_database(self) -> None:
        self.failure = "lost the connection to the database; stopping (clients move to other nodes)"
        log.error(self.failure)
        self._failed.set()

    async def _open(self, hub: Hub, presence: Presence) -> ServerState:
        """Open (migrating and on first start seeding) the database and the signing key."""
        cfg = self.config
        db = str(cfg.db_path)
        try:
            store = await open_store(db)
        except StoreError as exc:
            raise StartError(f"--db {display_db(db)}: {exc}") from None
        if self.cluster is not None:
            store.ids.node_id = self.cluster.node_id  # before the seed makes the first ids
        try:
            key = await asyncio.to_thread(auth.load_or_create_key, key_path_for(db))
            if not await store.is_seeded():
                password = cfg.admin_password or auth.random_password()
                hashed = await asyncio.to_thread(auth.hash_password, password, n=cfg.password_cost)
                if await store.seed(hashed):
                    self.admin_password = password
        except BaseException:
            await store.close()
            raise
        return ServerState(
            config=cfg,
            store=store,
            signer=auth.TokenSigner(key, cfg.token_validity_seconds),
            hub=hub,
            presence=presence,
        )

    async def _serve(self) -> None:
        state = self.state
        state.shutting_down = False
        cfg = self.config
        if self._listener is None:
            self._listener = _bind(cfg.host, self.port)
            self.port = self._listener.getsockname()[1]
        sock = self._listener.dup()  # uvicorn closes this one when it stops
        app = build_app(state)
        if self.cluster is not None:
            app = _AfterPublished(app, self.cluster)
        uv_config = uvicorn.Config(
            app,
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
            self._uvicorn.exit()
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
            try:
                await self._leave()  # after the sockets: their OFFLINE goes out first
            finally:
                await self._state.store.close()
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
        """Run until ``stop`` is set, or until uvicorn stops by itself, or until the
        node loses its database (then :attr:`failure` says so)."""
        assert self._task is not None
        waiter = asyncio.ensure_future(stop.wait())
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait({waiter, failed, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            failed.cancel()

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
        """How many websockets this node holds now (not the cluster's)."""
        return len(self.state.hub.subscribers)


def _login_limiters(state: ServerState) -> list[tuple[str, auth.LoginLimiter]]:
    """Every LoginLimiter of the state, named by where it lives (``limits.user_logins``),
    found up to two attributes deep: limiters added later are shared too."""
    found: list[tuple[str, auth.LoginLimiter]] = []
    seen: set[int] = set()

    def visit(prefix: str, obj: object, depth: int) -> None:
        if isinstance(obj, auth.LoginLimiter):
            if id(obj) not in seen:
                seen.add(id(obj))
                found.append((prefix, obj))
            return
        if depth == 0 or not hasattr(obj, "__dict__"):
            return
        for name, value in vars(obj).items():
            if not name.startswith("_"):
                visit(f"{prefix}.{name}" if prefix else name, value, depth - 1)

    for name in ("limits", "logins"):
        visit(name, getattr(state, name, None), 2)
    return found


async def reset_admin_password(config: ServerConfig, password: str | None = None) -> str:
    """Give user ``admin`` a new password (``password``, or a random one) and return it.

    The database must exist and be set up. Every token issued to admin before
    stops working; on PostgreSQL the running nodes also close admin's sockets
    (4001), so this is safe while they run.
    """
    check_db_path(config.db_path)
    db = str(config.db_path)
    if db == ":memory:":
        raise StartError("--reset-admin-password needs a --db that is kept")
    if not is_postgres_url(db) and not await asyncio.to_thread(os.path.exists, db):
        raise StartError(f"--db {db} does not exist; start the server once to create it")
    try:
        store = await open_store(db)
    except StoreError as exc:
        raise StartError(f"--db {display_db(db)}: {exc}") from None
    try:
        admin = await store.user_by_name("admin") if await store.is_seeded() else None
        if admin is None:
            raise StartError(f"--db {display_db(db)} has no user admin; start the server once")
        new_password = password or auth.random_password()
        hashed = await asyncio.to_thread(auth.hash_password, new_password)
        await store.set_password(admin.id, hashed)
    finally:
        await store.close()
    if is_postgres_url(db):
        await tell_nodes_to_close(db, admin.id, "admin password reset")
    return new_password


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
        """The configuration the server runs with."""
        return self.server.config

    @property
    def url(self) -> str:
        """The base URL; see :attr:`EmbeddedServer.url`."""
        return self.server.url

    @property
    def ws_url(self) -> str:
        """The websocket URL; see :attr:`EmbeddedServer.ws_url`."""
        return self.server.ws_url

    @property
    def admin_password(self) -> str | None:
        """The admin password seeded at first start (None when the database existed)."""
        return self.server.admin_password

    @property
    def port(self) -> int:
        """The bound port (the real one when configured with port 0)."""
        return self.server.port

    @property
    def store(self) -> Store:
        """The storage backend; see :attr:`EmbeddedServer.store`."""
        return self.server.store

    def start(self) -> None:
        """Start the server in a thread of its own; return once it listens, or raise why not."""
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
        """Stop the server and join its thread; a no-op when not running."""
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
        """Blocking :meth:`EmbeddedServer.restart` (clients see a dropped connection)."""
        self.call(self.server.restart)

    def drop_connections(self, code: int = RESTART_CODE) -> None:
        """Blocking :meth:`EmbeddedServer.drop_connections`."""
        self.call(self.server.drop_connections, code)

    def refuse_connections(self, seconds: float = 2.0) -> None:
        """Blocking :meth:`EmbeddedServer.refuse_connections`."""

        async def refuse() -> None:
            self.server.refuse_connections(seconds)

        self.call(refuse)

    def broadcast_raw(self, data: bytes | str, *, binary: bool = False) -> None:
        """Blocking :meth:`EmbeddedServer.broadcast_raw`."""

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
