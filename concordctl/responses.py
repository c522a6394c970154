"""What an HTTP answer means: its status as one of :mod:`concordctl.errors`. No I/O.

    2xx                        success (nothing else is: a 3xx is not followed)
    3xx                        ProtocolViolation (a redirect: the server URL is wrong)
    400 on POST /tokens        NotAuthenticated (wrong username or password)
    401                        NotAuthenticated
    400, 413, 415, other 4xx   BadRequest
    403 Forbidden · 404 NotFound · 429 RateLimited(retry_after) · 5xx ServerError

Kept apart from :mod:`concordctl.rest` so that the token flow
(:mod:`concordctl.auth`) maps its answers the same way without a circle.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TypeVar

from concordctl import protocol as p
from concordctl.errors import (
    BadRequest,
    ConcordError,
    Forbidden,
    NotAuthenticated,
    NotFound,
    ProtocolViolation,
    RateLimited,
    ServerError,
    redact_url,
)

__all__ = [
    "MAX_BODY",
    "decode_body",
    "error_for_response",
    "is_success",
    "one_line",
    "parse_retry_after",
]


T = TypeVar("T")

#: The httpx request extension that caps one answer's size, in bytes
#: (read by :class:`concordctl.transport.CappedTransport`).
MAX_BODY = "concordctl.max_body"


def is_success(status: int) -> bool:
    """2xx only: a 3xx answer to ``delete`` did not delete anything."""
    return 200 <= status < 300


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # an HTTP date is rare: not worth its import at start-up

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_body(body: bytes, model: type[T], what: str, status: int) -> T:
    """A 2xx body decoded as ``model``; else a :class:`ProtocolViolation` naming ``what``."""
    try:
        return p.decode(body, model)
    except p.FrameError as exc:
        raise ProtocolViolation(
            f"{what}: unexpected response body ({one_line(str(exc), 160)})",
            hint="is this a Concord server? check the server URL",
            status=status,
        ) from None


def _detail(body: bytes) -> str:
    if not body:
        return ""
    try:
        err = p.decode(body, p.ErrorBody)
    except p.FrameError:
        return ""
    return one_line(err.message or err.error or "")


def error_for_response(
    what: str,
    status: int,
    *,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    login: bool = False,
) -> ConcordError:
    """The exception for a failed response to ``what`` (e.g. "get chat 5")."""
    detail = _detail(body)
    reason = f"HTTP {status}" + (f": {detail}" if detail else "")
    if 300 <= status < 400 or status < 200:
        where = (headers or {}).get("location")
        to = f" to {one_line(redact_url(where), 120)}" if where else ""
        return ProtocolViolation(
            f"{what} failed: the server answered HTTP {status}{to}, not a result",
            hint="check the server URL (http or https, no path); redirects are not followed",
            status=status,
        )
    if status == 400 and login:
        return NotAuthenticated(
            f"{what} failed: wrong username or password ({reason})",
            hint="check the username and CONCORD_PASSWORD, or run 'concordctl login'",
            status=status,
        )
    return _error_for_status(what, status, reason, headers)


def _error_for_status(
    what: str, status: int, reason: str, headers: Mapping[str, str] | None
) -> ConcordError:
    if status == 401:
        return NotAuthenticated(
            f"{what} failed: not authenticated ({reason})",
            hint="the token is missing or expired; run 'concordctl login' or set CONCORD_TOKEN",
            status=status,
        )
    if status == 403:
        return Forbidden(
            f"{what} failed: forbidden ({reason})",
            hint="this user may not do that (only a chat's author may edit it)",
            status=status,
        )
    if status == 404:
        return NotFound(
            f"{what} failed: not found ({reason})", hint="check the id or name", status=status
        )
    if status == 429:
        retry_after = parse_retry_after((headers or {}).get("retry-after"))
        wait = f"retry in {retry_after:.0f} s" if retry_after is not None else "retry later"
        return RateLimited(
            f"{what} failed: rate limited ({reason})",
            hint=wait,
            status=status,
            retry_after=retry_after,
        )
    if status >= 500:
        return ServerError(
            f"{what} failed: server error ({reason})",
            hint="the server failed; retry later or check its logs",
            status=status,
        )
    return BadRequest(
        f"{what} failed: the server rejected the request ({reason})",
        hint="check the arguments",
        status=status,
    )
