"""How many client frames a user may send over its websockets.

Every accepted client frame becomes an event for every connected client, so
one user flooding frames would fill everybody's send queue and get healthy
readers disconnected as too slow. The sender pays instead: its frames beyond
the budget are dropped (and a socket that keeps flooding is closed, see
``websocket.py``), the readers never see them.

* ``chat_typing``: at most ``typing_per_second`` per user and channel; one
  that comes sooner is held back until its turn and replaced by any newer one
  (typing is a state, not a count: the latest is all that matters).
* ``chat_written`` and ``chat_reaction``: a token bucket per user,
  ``per_second`` on average, bursts up to ``burst``.

The budget is per user, shared by all of a user's sockets (so opening more
sockets buys nothing), and kept in memory bounded by the users and channels
that exist.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["FrameBudget"]

# Typing entries older than this many intervals are forgotten when the table grows.
_TYPING_TABLE_SWEEP = 4096


class FrameBudget:
    def __init__(self, typing_per_second: float, per_second: float, burst: int) -> None:
        #: Seconds between two typing events of one user in one channel; 0: no limit.
        self.typing_interval = 1.0 / typing_per_second if typing_per_second > 0 else 0.0
        #: Average chat_written + chat_reaction frames per second per user; 0: no limit.
        self.per_second = per_second
        #: How many such frames a user may send at once after a pause.
        self.burst = max(1, burst)
        # (user id, channel id) -> when its last typing event went out (monotonic).
        self._typing: dict[tuple[int, int], float] = {}
        # (user id, channel id) -> the latest typing event held back, and how to send it.
        self._pending: dict[tuple[int, int], tuple[Any, Callable[[Any], None]]] = {}
        # user id -> (tokens left, when they were counted).
        self._buckets: dict[int, tuple[float, float]] = {}
        #: Seconds, monotonic; tests replace it to let the budget refill at once.
        self.clock: Callable[[], float] = time.monotonic

    def offer_typing(
        self, user_id: int, channel_id: int, event: T, deliver: Callable[[T], None]
    ) -> bool:
        """Deliver a typing ``event`` now, or coalesce it: the latest one of this user
        and channel goes out when its interval is over, the ones before it never.
        False when it did not go out now (it counts as over the budget)."""
        key = (user_id, channel_id)
        if self.typing_interval <= 0:
            deliver(event)
            return True
        if key in self._pending:
            self._pending[key] = (event, deliver)  # the timer already set delivers it
            return False
        now = self.clock()
        wait = self._typing.get(key, -math.inf) + self.typing_interval - now
        if wait <= 0:
            self._sent_typing(key, now)
            deliver(event)
            return True
        self._pending[key] = (event, deliver)
        asyncio.get_running_loop().call_later(wait, self._deliver_pending, key)
        return False

    def _deliver_pending(self, key: tuple[int, int]) -> None:
        pending = self._pending.pop(key, None)
        if pending is not None:
            event, deliver = pending
            self._sent_typing(key, self.clock())
            deliver(event)

    def _sent_typing(self, key: tuple[int, int], now: float) -> None:
        if len(self._typing) >= _TYPING_TABLE_SWEEP:
            horizon = now - self.typing_interval
            self._typing = {k: t for k, t in self._typing.items() if t > horizon}
        self._typing[key] = now

    def allow_write(self, user_id: int) -> bool:
        """True if a chat_written or chat_reaction frame of this user may be acted on now."""
        if self.per_second <= 0:
            return True
        now = self.clock()
        tokens, counted = self._buckets.get(user_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - counted) * self.per_second)
        if tokens < 1.0:
            self._buckets[user_id] = (tokens, now)
            return False
        self._buckets[user_id] = (tokens - 1.0, now)
        return True
