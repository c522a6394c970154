"""``auth status``: what the current credentials are, and whether they work."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from concordctl.errors import NotAuthenticated

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.cli.options import Connection
    from concordctl.client import Client

__all__ = ["status_of"]


def status_of(conn: Connection) -> dict[str, Any]:
    """Profile, server, user, token expiry, saved password, and whether the server agrees.

    ``loggedIn`` is False (with ``why``) when there are no credentials or the
    server refuses them; an unreachable server is an error (exit 6).
    """
    from concordctl.config import load_profile, resolve_settings
    from concordctl.tokens import token_expiry

    settings = resolve_settings(conn.server, profile=conn.profile)
    stored = load_profile(settings.profile, settings.config_path)
    from_env = bool(os.environ.get("CONCORD_TOKEN") or os.environ.get("CONCORD_PASSWORD"))
    status: dict[str, Any] = {
        "profile": settings.profile,
        "server": settings.server,
        "username": settings.username,
        "passwordSaved": bool(stored.get("password")),
        "source": "environment" if from_env else f"profile {settings.profile!r}",
        "expiresAt": None,
        "expires": None,
        "loggedIn": False,
    }
    if settings.token:
        exp, _ = token_expiry(settings.token)
        if exp is not None:
            status["expiresAt"] = int(exp * 1000)
            status["expires"] = datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%d %H:%M UTC")
    if not settings.server or not (settings.token or settings.password):
        status["why"] = ": no credentials" if not settings.server else f" to {settings.server}"
        return status

    async def check(c: Client) -> str:
        return (await c.me()).username

    try:
        status["username"] = conn.run(check)
        status["loggedIn"] = True
    except NotAuthenticated:
        status["why"] = f": {settings.server} refuses these credentials"
    return status
