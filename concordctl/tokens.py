"""When a token expires and what to do about it: no I/O, no HTTP stack.

The client only uses the JWT's times to renew a token early; the server still
checks the signature. Kept apart from :mod:`concordctl.rest` so that a
client streaming with a token it already has can decide that the token is
still good without importing the REST client (and httpx) at all.

:class:`TokenState` is the token lifecycle as plain decisions: given the
credentials, the current token and a clock, :meth:`TokenState.next_step`
says whether to use the token, log in or recycle it, or that nothing can
help (``NotAuthenticated``). :class:`concordctl.auth.TokenAuth` performs the
steps over HTTP; tests drive this class with a fake clock and no sleeping.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from typing import Literal

from concordctl.errors import NotAuthenticated

__all__ = ["Step", "TokenState", "renew_margin", "token_expiry", "token_is_fresh"]

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


#: What to do before (or after a 401 to) a request: send it with the current
#: token, log in with the username and password, or trade the token for a new one.
Step = Literal["use", "login", "recycle"]


class TokenState:
    """The credentials, the current token and when it is due; decisions only.

    ``clock`` returns epoch seconds (``time.time`` by default): inject a fake
    one to test renewal without waiting. Renewal is due ``renew_before``
    seconds before ``exp`` (a minute, or a fifth of a short lifetime).
    """

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.username = username
        self.password = password  # never in a repr or a message
        self.clock = clock
        self.token: str | None = None
        self.expires_at: float | None = None  # the JWT's exp, None when it has none
        self.renew_before = MAX_RENEW_MARGIN
        if token:
            self.set(token)

    def __repr__(self) -> str:
        return (
            f"TokenState(username={self.username!r}, password={'***' if self.password else None}, "
            f"token={'***' if self.token else None})"
        )

    @property
    def has_credentials(self) -> bool:
        """Whether a username and password are there to log in (again) with."""
        return bool(self.username and self.password)

    def set(self, token: str) -> None:
        """Keep ``token`` (just issued) and read when it is due for renewal."""
        self.token = token
        exp, iat = token_expiry(token)
        self.expires_at = exp
        if exp is not None:
            self.renew_before = renew_margin(exp, iat, self.clock())

    def forget(self) -> None:
        """The token no longer works (revoked): the next request needs a new one."""
        self.token = None
        self.expires_at = None

    def due(self, now: float | None = None) -> bool:
        """Whether the token should be renewed now (False for one without ``exp``)."""
        if self.expires_at is None:
            return False
        return (self.clock() if now is None else now) >= self.expires_at - self.renew_before

    def expired(self) -> bool:
        return self.expires_at is not None and self.clock() >= self.expires_at

    def next_step(self, stale: str | None = None, *, rejected: bool = False) -> Step:
        """What to do before a request; ``rejected``: the server answered 401 to ``stale``.

        Raises :class:`NotAuthenticated` when no step can give a working token.
        """
        token = self.token
        if rejected:
            if token is not None and token != stale and not self.due():
                return "use"  # another request renewed it meanwhile
            if self.has_credentials:
                return "login"
            if token is not None and token == stale:
                raise self._rejected()
            if token is not None:
                return "recycle"
            raise self._not_logged_in()
        if token is None:
            if self.has_credentials:
                return "login"
            raise self._not_logged_in()
        if not self.due():
            return "use"
        if self.has_credentials:
            return "login"
        # Only a token: trade it while it still works; once expired the server says so.
        return "use" if self.expired() else "recycle"

    def _rejected(self) -> NotAuthenticated:
        why = "expired or invalid"
        if self.expires_at is not None and self.expired():
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.expires_at))
            why = f"it expired at {when}"
        return NotAuthenticated(
            f"the server rejected the token ({why})",
            hint="run 'concordctl login' or set a fresh CONCORD_TOKEN",
            status=401,
        )

    @staticmethod
    def _not_logged_in() -> NotAuthenticated:
        return NotAuthenticated(
            "not logged in",
            hint="pass a username and password, set CONCORD_TOKEN, or run 'concordctl login'",
        )
