"""Settings of the embedded server, with their documented limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import platformdirs

__all__ = ["ServerConfig", "default_db_path", "key_path_for"]


def default_db_path() -> Path:
    """Where ``concordctl serve`` keeps its database unless ``--db`` says otherwise."""
    return platformdirs.user_data_path("concordctl") / "server.db"


def key_path_for(db_path: str | Path) -> Path | None:
    """The signing key lives beside the database; None (in memory) for ``:memory:``."""
    if str(db_path) == ":memory:":
        return None
    path = Path(db_path)
    return path.with_name(path.name + ".jwt-key.pem")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    #: A file path, or ":memory:" (the default: nothing touches the disk).
    db_path: str | Path = ":memory:"
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
    max_ws_per_user: int = 32
    #: Outgoing bytes one websocket may have waiting (queued events and the socket's
    #: buffer, pongs included) before it counts as too slow.
    ws_buffer_bytes: int = 4 * 1024 * 1024
    #: Typing events per user and channel per second; more are coalesced (``flood.py``).
    ws_typing_per_second: float = 2.0
    #: chat_written + chat_reaction frames per user per second on average, and at once.
    ws_frames_per_second: float = 10.0
    ws_frame_burst: int = 20
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
    #: Seconds after connecting before a user is announced ONLINE (upstream: ~1 s).
    online_delay: float = 1.0
    #: uvicorn's websocket implementation ("websockets-sansio", "websockets", "wsproto").
    ws_impl: str = "websockets-sansio"
    #: Write queued events straight to uvicorn's websocket connection, many per
    #: system call (``fastpath.py``); False sends each through ASGI.
    direct_writes: bool = True
    #: uvicorn's HTTP implementation ("h11", or "httptools" when installed).
    http_impl: str = "h11"

    @property
    def token_validity_seconds(self) -> float:
        if self.token_seconds is not None:
            return self.token_seconds
        return self.token_days * 86400.0
