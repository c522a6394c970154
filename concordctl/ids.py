"""Snowflake ids and the millisecond clock, once for the server and the client.

An upstream id is ``(ms since 2021-10-10T00:00:00Z) << 22 | sequence``. The
server makes them (:class:`SnowflakeGenerator`); the client reads the time
back out of them to recover what it missed (:func:`snowflake_time`). No I/O.
"""

from __future__ import annotations

import threading
import time

__all__ = [
    "EPOCH_MS",
    "MAX_ID",
    "SEQUENCE_BITS",
    "SnowflakeGenerator",
    "now_ms",
    "snowflake_id",
    "snowflake_time",
]

#: Upstream's snowflake epoch, 2021-10-10T00:00:00Z, in Unix milliseconds.
EPOCH_MS = 1_633_824_000_000
#: Low bits of an id below the timestamp.
SEQUENCE_BITS = 22
#: The largest id SQLite, PostgreSQL's bigint and Java's long can hold.
MAX_ID = (1 << 63) - 1


def now_ms() -> int:
    """The wall clock in Unix milliseconds."""
    return time.time_ns() // 1_000_000


def snowflake_time(snowflake: int) -> int:
    """Epoch ms encoded in an upstream-style snowflake id (a best guess)."""
    return (snowflake >> SEQUENCE_BITS) + EPOCH_MS


def snowflake_id(ms: int) -> int:
    """The largest snowflake id that a server could issue at epoch ms ``ms``."""
    return ((ms - EPOCH_MS + 1) << SEQUENCE_BITS) - 1


class SnowflakeGenerator:
    """Ids as upstream makes them: ``(ms since 2021-10-10) << 22 | sequence``.

    Strictly increasing, even if the clock steps back or a millisecond runs
    out of sequence numbers (then the next millisecond is borrowed). ``floor``
    is the largest id already issued (read from the database at start).
    Thread-safe: the SQLite backend calls it from its writer thread.
    """

    def __init__(self, floor: int = 0) -> None:
        self._last = floor
        self._lock = threading.Lock()

    def next_id(self) -> int:
        """A new id, larger than every id this generator issued or was floored at."""
        with self._lock:
            candidate = (now_ms() - EPOCH_MS) << SEQUENCE_BITS
            self._last = candidate if candidate > self._last else self._last + 1
            return self._last
