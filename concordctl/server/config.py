"""Settings of the embedded server, with their documented limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import platformdirs

__all__ = ["ServerConfig", "default_db_path", "display_db", "is_postgres_url", "key_path_for"]


def default_db_path() -> Path:
    """Where ``concordctl serve`` keeps its database unless ``--db`` says otherwise."""
    return platformdirs.user_data_path("concordctl") / "server.db"


def is_postgres_url(db: str | Path) -> bool:
    """True for ``postgresql://`` (and ``postgres://``) URLs: the PostgreSQL backend."""
    return str(db).startswith(("postgresql://", "postgres://"))


def display_db(db: str | Path) -> str:
    """``db`` as it may be shown or logged: a URL's password replaced by ``***``."""
    text = str(db)
    if not is_postgres_url(text):
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def key_path_for(db_path: str | Path) -> Path | None:
    """The signing key lives beside the database; None for ``:memory:`` (in memory)
    and for PostgreSQL (the key is in the database, shared by every node)."""
    if str(db_path) == ":memory:" or is_postgres_url(db_path):
        return None
    path = Path(db_path)
    return path.with_name(path.name + ".jwt-key.pem")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    #: A file path, or ":memory:" (the default: nothing touches the disk).
    db_path: str | Path = ":memory:"
    #: This node's number in snowflake ids on PostgreSQL; None (``--node-id auto``)
    #: takes a free one from the database at start. Unused on SQLite (one node).
    node_id: int | None = None
    #: The PostgreSQL database whose nodes this one joins (events, presence, limits,
    #: key); None for one node alone. ``db_path`` when that is a postgresql URL.
    cluster_url: str | None = None
    token_days: float = 30.0
    #: Overrides ``token_days`` when set (tests use a few seconds).
    token_seconds: float | None = None
    #: The admin password on first start; None makes a random one (``admin_password``).
    admin_password: str | None = None
    #: One info line per request on the "concordctl.server.access" logger.
    log_requests: bool = False
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    #: Origins allowed by CORS; empty (the default) sends no CORS headers at all.
    cors_origins: tuple[str, ...] = ()
    #: scrypt's cost N (a power of 2) for new password hashes: 2**14, about 0.1 s
    #: a hash here. Test servers (concordctl.testing, the test suite) use 2**10;
    #: never lower it for a server people use.
    password_cost: int = 2**14

    # Limits (README, "The embedded server").
    max_content_chars: int = 4000
    max_body_bytes: int = 64 * 1024
    max_avatar_bytes: int = 2 * 1024 * 1024
    max_page_size: int = 1000
    ws_max_message_bytes: int = 64 * 1024
    #: Events queued for one websocket client before it counts as too slow.
    ws_queue_size: int = 1024
    #: Seconds a close may wait for a slow client's buffers before its socket is dropped.
    ws_close_timeout: float = 5.0
    #: Websockets one user may hold open (a CI matrix of ``wait`` jobs shares one token).
    max_ws_per_user: int = 256
    #: Outgoing bytes one websocket may have waiting (queued events and the socket's
    #: buffer, pongs included) before it counts as too slow.
    ws_buffer_bytes: int = 4 * 1024 * 1024
    #: Typing events per user and channel per second; more are coalesced (``flood.py``).
    ws_typing_per_second: float = 2.0
    #: chat_written + chat_reaction frames per user per second on average, and at once.
    ws_frames_per_second: float = 20.0
    ws_frame_burst: int = 100
    #: Frames dropped over budget within 10 s after which the socket is closed (1008).
    ws_dropped_frames_limit: int = 200
    #: Failed logins per client address and username within the window.
    login_failures_per_user: int = 10
    #: Failed logins per client address, whatever the username (a ceiling against sprays).
    login_failures_per_address: int = 500
    login_window_seconds: float = 60.0
    #: Keys each login limiter tracks at most (a few hundred bytes each).
    login_tracked_keys: int = 10_000
    #: Addresses (or networks, "*" for any) whose X-Forwarded-For / X-Forwarded-Proto
    #: are believed; empty (the default): no proxy header is.
    forwarded_allow_ips: tuple[str, ...] = ()
    #: Host names accepted besides the bound address and localhost (``--allowed-host``).
    allowed_hosts: tuple[str, ...] = ()
    #: Connections open at once (HTTP and websocket); one more gets 503 and a log line.
    max_connections: int = 1000
    #: Seconds from a connection opening (or a request's first byte) to its complete headers.
    http_header_timeout: float = 10.0
    #: Seconds a request body may take to arrive, from its headers.
    http_body_timeout: float = 30.0
    #: Seconds an idle keep-alive connection is kept open.
    http_idle_timeout: float = 5.0
    #: Accounts one client address may register per window (0: no limit).
    registrations_per_address: int = 20
    registration_window_seconds: float = 3600.0
    #: Avatar uploads per user and window: bytes and count (0: no limit).
    avatar_bytes_per_window: int = 16 * 1024 * 1024
    avatar_uploads_per_window: int = 20
    avatar_window_seconds: float = 3600.0
    #: Anyone may create, edit and delete channels and edit the server (upstream's
    #: rule); False (the default) keeps that to admins (``--open-channels``).
    open_channels: bool = False
    #: ``POST /api/users/register`` is open; False answers 403 (``--no-registration``).
    registration: bool = True
    #: Seconds after connecting before a user is announced ONLINE (upstream: ~1 s).
    online_delay: float = 1.0
    #: uvicorn's websocket implementation ("websockets-sansio", "websockets", "wsproto").
    ws_impl: str = "websockets-sansio"
    #: Write queued events straight to uvicorn's websocket connection, many per
    #: system call (``fastpath.py``); False sends each through ASGI.
    direct_writes: bool = True
    #: uvicorn's HTTP implementation ("h11", or "httptools" when installed).
    http_impl: str = "h11"

    def __post_init__(self) -> None:
        cost = self.password_cost
        if cost < 2**4 or cost > 2**20 or cost & (cost - 1):
            raise ValueError("password_cost must be a power of 2 from 2**4 to 2**20")
        if self.cluster_url is None and is_postgres_url(self.db_path):
            self.cluster_url = str(self.db_path)

    @property
    def token_validity_seconds(self) -> float:
        if self.token_seconds is not None:
            return self.token_seconds
        return self.token_days * 86400.0
