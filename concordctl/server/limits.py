"""Per-user and per-address limits of one server process (memory, sliding windows).

Login failures use :class:`~concordctl.server.auth.LoginGuard` (per address
and username, plus a per-address ceiling); client frames over websockets use
:class:`~concordctl.server.flood.FrameBudget`;
registrations per address and avatar uploads per user are counted here the
same way. Every limit is a :class:`~concordctl.server.config.ServerConfig`
field (README, "The embedded server"); 0 turns one off.
"""

from __future__ import annotations

import time
from collections import deque

from concordctl.server import auth
from concordctl.server.config import ServerConfig
from concordctl.server.flood import FrameBudget

__all__ = ["ByteBudget", "Limits"]


class ByteBudget:
    """At most ``max_bytes`` and ``max_events`` per key within ``window`` seconds."""

    def __init__(self, max_bytes: int, max_events: int, window: float, max_keys: int = 10_000):
        self.max_bytes = max_bytes
        self.max_events = max_events
        self.window = window
        self.max_keys = max_keys
        self._spent: dict[object, deque[tuple[float, int]]] = {}

    def _recent(self, key: object) -> deque[tuple[float, int]]:
        spent = self._spent.setdefault(key, deque())
        horizon = time.monotonic() - self.window
        while spent and spent[0][0] <= horizon:
            spent.popleft()
        if len(self._spent) > self.max_keys:  # bounded under a spray of keys
            for stale in [k for k, v in self._spent.items() if not v and k != key]:
                del self._spent[stale]
        return spent

    def refusal(self, key: object, size: int) -> str | None:
        """Why ``size`` more bytes may not be spent now, or None (then call :meth:`spend`)."""
        spent = self._recent(key)
        if self.max_events > 0 and len(spent) >= self.max_events:
            return f"at most {self.max_events} uploads per {self.window:g} s"
        if self.max_bytes > 0 and sum(n for _, n in spent) + size > self.max_bytes:
            return f"at most {self.max_bytes} bytes of uploads per {self.window:g} s"
        return None

    def spend(self, key: object, size: int) -> None:
        """Count an upload of ``size`` bytes."""
        self._recent(key).append((time.monotonic(), size))


class Limits:
    """Every limiter of a server, built from its config."""

    def __init__(self, config: ServerConfig) -> None:
        c = config
        #: Failed logins per client address and username, and per address (a ceiling).
        self.logins = auth.LoginGuard.for_limits(
            c.login_failures_per_user,
            c.login_failures_per_address,
            c.login_window_seconds,
            c.login_tracked_keys,
        )
        #: Accounts registered per client address.
        self.registrations = auth.LoginLimiter(
            c.registrations_per_address, c.registration_window_seconds
        )
        #: Avatar uploads per user: a byte budget and a count per window.
        self.avatar_uploads = ByteBudget(
            c.avatar_bytes_per_window, c.avatar_uploads_per_window, c.avatar_window_seconds
        )
        #: Client frames per user over websockets (typing coalesced, writes budgeted).
        self.frames = FrameBudget(c.ws_typing_per_second, c.ws_frames_per_second, c.ws_frame_burst)
