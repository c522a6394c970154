"""When a token expires, read from the JWT itself: no I/O, no HTTP stack.

The client only uses these times to renew a token early; the server still
checks the signature. Kept apart from :mod:`concordctl.rest` so that a
client streaming with a token it already has can decide that the token is
still good without importing the REST client (and httpx) at all.
"""

from __future__ import annotations

import base64
import binascii
import json
import time

__all__ = ["renew_margin", "token_expiry", "token_is_fresh"]

#: Renew at most this long before ``exp``.
MAX_RENEW_MARGIN = 60.0


def token_expiry(token: str) -> tuple[float | None, float | None]:
    """``(exp, iat)`` of a JWT in epoch seconds, read without verifying it.

    Anything unreadable gives ``(None, None)``.
    """
    try:
        payload = token.split(".")[1]
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        return None, None
    if not isinstance(claims, dict):
        return None, None
    exp, iat = claims.get("exp"), claims.get("iat")
    return (
        float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None,
        float(iat) if isinstance(iat, (int, float)) and not isinstance(iat, bool) else None,
    )


def renew_margin(exp: float, iat: float | None, now: float | None = None) -> float:
    """How long before ``exp`` to renew: a minute, or a fifth of a short lifetime."""
    lifetime = exp - (iat if iat is not None else (time.time() if now is None else now))
    return max(0.0, min(MAX_RENEW_MARGIN, lifetime / 5))


def token_is_fresh(token: str, now: float | None = None) -> bool:
    """Whether ``token`` is not yet due for renewal (one without ``exp`` always is)."""
    exp, iat = token_expiry(token)
    if exp is None:
        return True
    now = time.time() if now is None else now
    return now < exp - renew_margin(exp, iat, now)
