"""The event stream's connection states and every transition between them.

Everything that changes the state of an :class:`~concordctl.stream.EventStream`
goes through :func:`transition`, checked against the one table below, as
h11's ``_state.py`` keeps its state machine in one file. No I/O here, and no
websockets import: :class:`StreamState` is what ``on_state`` callbacks get,
and a CLI command that only talks REST can name it without paying for the
websocket stack.

::

    CONNECTING ──▶ RECOVERING ──▶ LIVE ──▶ RECONNECTING ──▶ RECOVERING ...
        │   ▲          │            │           │   ▲
        │   └──────────┼────────────┼───────────┘   │  (a failed attempt
        ▼              ▼            ▼               │   waits, then retries)
      CLOSED ◀───── (any state: aclose(), or authentication failed for good)

``LIVE`` is spelled ``"connected"`` (``ConnectionState.CONNECTED`` is the
same member): callbacks written before the enum compare ``state.state`` with
that string, and ``StrEnum`` members are equal to their value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ConnectionState", "IllegalTransition", "StreamState", "transition"]


class ConnectionState(enum.StrEnum):
    """Where the stream is; each value is what ``StreamState.state`` compares equal to."""

    #: The first connection attempt is under way.
    CONNECTING = "connecting"
    #: A socket is open; the chats missed before it are being fetched over REST.
    RECOVERING = "recovering"
    #: Live frames are being read and yielded.
    LIVE = "connected"
    CONNECTED = "connected"  # the historical name of LIVE (an alias, same member)
    #: The last connection or attempt ended; waiting ``delay`` before the next.
    RECONNECTING = "reconnecting"
    #: Finished: closed by the caller, or authentication failed for good.
    CLOSED = "closed"


S = ConnectionState

#: state -> the states it may move to. Nothing leaves CLOSED.
TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    S.CONNECTING: frozenset({S.CONNECTING, S.RECOVERING, S.LIVE, S.RECONNECTING, S.CLOSED}),
    S.RECOVERING: frozenset({S.LIVE, S.RECONNECTING, S.CLOSED}),
    S.LIVE: frozenset({S.RECOVERING, S.RECONNECTING, S.CLOSED}),
    S.RECONNECTING: frozenset({S.RECONNECTING, S.RECOVERING, S.LIVE, S.CLOSED}),
    S.CLOSED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A state change the table does not allow: a bug in the stream, never the server's doing."""


@dataclass(frozen=True)
class StreamState:
    """A state change of the stream, for ``on_state`` callbacks.

    ``state`` is a :class:`ConnectionState` (equal to its string value, so
    ``state.state == "connected"`` works); ``attempt`` counts the connection
    attempts since the last success; ``delay`` is the wait before the next
    one (reconnecting); ``error`` says why the previous connection or attempt
    ended.
    """

    state: ConnectionState
    attempt: int = 0
    delay: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        # StreamState("closed") keeps working: the string becomes the member.
        object.__setattr__(self, "state", ConnectionState(self.state))


def transition(current: StreamState, new: StreamState) -> StreamState:
    """``new`` if the table allows moving there from ``current``; else IllegalTransition."""
    if new.state not in TRANSITIONS[current.state]:
        raise IllegalTransition(f"stream state {current.state.name} -> {new.state.name}")
    return new
