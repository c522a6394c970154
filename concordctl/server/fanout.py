"""How an event reaches the clients: the one seam between a node and its cluster.

``ServerState.broadcast`` hands every encoded event to a :class:`Fanout`;
websocket sessions report presence to it and ask it to close a user's
sockets. :class:`LocalFanout` is one node alone (SQLite): straight to the
local hub. ``cluster.Cluster`` is the same interface across several nodes on
one PostgreSQL database.
"""

from __future__ import annotations

from typing import Protocol

from concordctl import protocol as p
from concordctl.server.hub import Hub

__all__ = ["Fanout", "LocalFanout", "close_local", "status_frame"]


class Fanout(Protocol):
    """What the server needs from whoever delivers its events."""

    def publish(self, frame: str) -> None:
        """Deliver ``frame`` (an encoded event) to every client of the server."""

    def presence(self, user_id: int, present: bool) -> None:
        """This node has (``present``), or no longer has, an announced socket of the
        user; clients hear ONLINE/OFFLINE when the server's presence changes."""

    def close_user(self, user_id: int, code: int, reason: str) -> None:
        """Close every socket of the user, wherever it is connected, with ``code``."""


def status_frame(user_id: int, status: p.OnlineStatus) -> str:
    return p.encode_event(p.UserStatusUpdated(user_id=user_id, status=status)).decode("utf-8")


def close_local(hub: Hub, user_id: int, code: int, reason: str) -> None:
    """Close this node's sockets of the user (in the background, bounded in time)."""
    hub.close_user(user_id, code, reason)


class LocalFanout:
    """One node alone: events go straight to the local hub; presence is this
    node's sockets."""

    def __init__(self, hub: Hub, online: set[int]) -> None:
        self.hub = hub
        #: Users with an announced socket: the server's presence (``ServerState.online``).
        self.online = online

    def publish(self, frame: str) -> None:
        self.hub.broadcast(frame)

    def presence(self, user_id: int, present: bool) -> None:
        if present == (user_id in self.online):
            return
        if present:
            self.online.add(user_id)
        else:
            self.online.discard(user_id)
        self.hub.broadcast(status_frame(user_id, "ONLINE" if present else "OFFLINE"))

    def close_user(self, user_id: int, code: int, reason: str) -> None:
        close_local(self.hub, user_id, code, reason)
