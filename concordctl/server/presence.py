"""Who is online: a user is ONLINE while it has a socket open (after a short delay).

Kept apart from the hub so that the rule lives in one place; the websocket
handler calls :meth:`Presence.connected` / :meth:`Presence.disconnected`.
"""

from __future__ import annotations

from concordctl import protocol as p
from concordctl.server.store import StoredUser

__all__ = ["Presence"]


class Presence:
    """The set of online user ids, and the FullUser shape that shows it."""

    def __init__(self) -> None:
        self.online: set[int] = set()

    def is_online(self, user_id: int) -> bool:
        """True while the user counts as online."""
        return user_id in self.online

    def went_online(self, user_id: int) -> bool:
        """Record the user online; True when that is news (broadcast ONLINE)."""
        if user_id in self.online:
            return False
        self.online.add(user_id)
        return True

    def went_offline(self, user_id: int) -> bool:
        """Record the user offline; True when it was online (broadcast OFFLINE)."""
        if user_id not in self.online:
            return False
        self.online.discard(user_id)
        return True

    def full_user(self, user: StoredUser) -> p.FullUser:
        """The user as ``GET /users`` shows it, with its online status."""
        status: p.OnlineStatus = "ONLINE" if user.id in self.online else "OFFLINE"
        return p.FullUser(
            id=user.id,
            username=user.username,
            profile=user.profile,
            status=p.UserStatus(online_status=status),
        )
