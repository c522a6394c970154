"""What the store hands back besides the wire models: users and search filters."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from concordctl.protocol import Profile

__all__ = ["SearchFilter", "StoredUser", "username_key"]


def username_key(username: str) -> str:
    """The key that makes usernames unique and logs users in: NFKC, then case-folded.

    ``Ärger``, ``ärger`` and ``ÄRGER`` share one key (so only one registers),
    and so do a name and its compatibility forms (``ｆｕｌｌ`` and ``full``).
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold())


@dataclass(frozen=True, slots=True)
class StoredUser:
    """A user row. ``token_version`` is in every token issued to the user: a
    password change or a logout everywhere bumps it, retiring older tokens."""

    id: int
    username: str
    password_hash: str
    password_changed_at: int
    created_at: int
    nickname: str
    bio: str | None
    avatar_id: int | None
    admin: bool
    token_version: int

    @property
    def profile(self) -> Profile:
        """The user's public profile, as the wire shows it."""
        return Profile(
            created_at=self.created_at,
            nickname=self.nickname,
            bio=self.bio,
            avatar_id=self.avatar_id,
        )


@dataclass(slots=True)
class SearchFilter:
    """``GET /chats``: every field optional; ``thread_id == -1`` means no thread.

    ``query`` follows ``search.py``: several words = all of them, ``"quoted
    words"`` = a phrase.
    """

    query: str | None = None
    author_id: int | None = None
    channel_id: int | None = None
    thread_id: int | None = None
    before: int | None = None
    after: int | None = None
    page: int = 0
    size: int = 50
