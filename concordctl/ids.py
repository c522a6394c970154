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
    "MAX_NODE_ID",
    "NODE_SEQUENCE_BITS",
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
#: With a node number, the low bits are 10 of node then these 12 of sequence.
NODE_SEQUENCE_BITS = 12
#: The largest node number (``concordctl serve --node-id``).
MAX_NODE_ID = (1 << (SEQUENCE_BITS - NODE_SEQUENCE_BITS)) - 1
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
    With a ``node_id`` (several nodes on one PostgreSQL database,
    ``server/cluster.py``) the 22 low bits are ``node << 12 | sequence``, so
    two nodes never make the same id.
    Thread-safe: the SQLite backend calls it from its writer thread.
    """

    def __init__(self, floor: int = 0, node_id: int | None = None) -> None:
        self._last = floor
        self._lock = threading.Lock()
        #: This node's number (0-1023), or None for a server of one process.
        self.node_id = node_id

    def next_id(self) -> int:
        """A new id, larger than every id this generator issued or was floored at."""
        with self._lock:
            node = self.node_id
            candidate = (now_ms() - EPOCH_MS) << SEQUENCE_BITS
            if node is not None:
                candidate |= node << NODE_SEQUENCE_BITS
            if candidate > self._last:
                self._last = candidate
            elif node is None:
                self._last += 1
            else:
                following = self._last + 1
                if (following >> NODE_SEQUENCE_BITS) & MAX_NODE_ID != node:
                    # Out of sequence numbers (or past another node's id): next millisecond.
                    following = ((self._last >> SEQUENCE_BITS) + 1) << SEQUENCE_BITS
                    following |= node << NODE_SEQUENCE_BITS
                self._last = following
            return self._last
