"""Validation shared by REST and websocket frames: ids, content, names, roles.

Each check raises :class:`~concordctl.server.responses.ApiError` with a
message that says what is wrong; it never touches the database.
"""

from __future__ import annotations

from concordctl import protocol as p
from concordctl.ids import MAX_ID
from concordctl.server.config import ServerConfig
from concordctl.server.responses import ApiError, Forbidden
from concordctl.server.store import StoredUser

__all__ = [
    "MAX_USERNAME_CHARS",
    "check_content",
    "check_credentials",
    "check_id",
    "parse_id",
    "require_admin",
]

#: Registration refuses longer names (and logins never look them up).
MAX_USERNAME_CHARS = 64


def check_id(value: int | None, what: str) -> None:
    """A present id must be a positive 64-bit integer (None passes)."""
    if value is not None and not 0 < value <= MAX_ID:
        raise ApiError(400, f"{what} must be a positive 64-bit integer")


def parse_id(text: str, what: str) -> int:
    """A positive 64-bit id from a path or query; 400 for anything else."""
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ApiError(400, f"{what} must be a positive 64-bit integer")
    value = int(text)
    if not 0 < value <= MAX_ID:
        raise ApiError(400, f"{what} must be a positive 64-bit integer")
    return value


def check_content(config: ServerConfig, content: str) -> str:
    """Chat content as stored: not blank, within the limit, no NUL."""
    if not content.strip():
        raise ApiError(400, "content must not be empty")
    if len(content) > config.max_content_chars:
        raise ApiError(400, f"content longer than {config.max_content_chars} characters")
    if "\x00" in content:
        raise ApiError(400, "content must not contain NUL characters")
    return content


def check_credentials(creds: p.Credentials) -> None:
    """A username and password registration accepts."""
    name = creds.username
    if not name or len(name) > MAX_USERNAME_CHARS or not name.isprintable() or name != name.strip():
        raise ApiError(
            400, f"username must be 1-{MAX_USERNAME_CHARS} printable characters, no outer spaces"
        )
    if not creds.password or len(creds.password) > 1024:
        raise ApiError(400, "password must be 1-1024 characters")


def require_admin(user: StoredUser, action: str, *, open_to_all: bool = False) -> None:
    """403 unless ``user`` is an admin, or the server opens ``action`` to everyone.

    ``open_to_all`` is ``ServerConfig.open_channels`` for channel changes
    (upstream's "anyone may"); ``action`` completes "only an admin may ...".
    """
    if user.admin or open_to_all:
        return
    raise Forbidden(f"only an admin may {action}")
