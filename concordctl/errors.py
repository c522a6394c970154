"""The exceptions of concordctl, one tree that callers can catch at any level.

    ConcordError                    exit 1   anything below
    ├── UsageError                  exit 2   bad settings or arguments
    ├── NotAuthenticated            exit 3   no or bad credentials, 401
    ├── NotFound                    exit 4   404, unknown channel or user name
    ├── Forbidden                   exit 5   403
    ├── Unreachable                 exit 6   connection refused, DNS, TLS
    ├── ServerError                 exit 7   5xx
    ├── ProtocolViolation           exit 7   a body or frame not of the contract
    ├── BadRequest                  exit 2   400 (other than bad credentials)
    ├── RateLimited                 exit 1   429, ``retry_after`` seconds
    └── TimedOut                    exit 124 a deadline passed

``exit_code`` is the command line's exit status for the error (DESIGN.md).
``str(error)`` is one line: what failed, why, and what to do. No message ever
contains a token or a password; URLs go through :func:`redact_url`.
"""

from __future__ import annotations

import re
from typing import ClassVar

__all__ = [
    "BadRequest",
    "ConcordError",
    "Forbidden",
    "NotAuthenticated",
    "NotFound",
    "ProtocolViolation",
    "RateLimited",
    "ServerError",
    "TimedOut",
    "Unreachable",
    "UsageError",
    "redact_url",
]

_TOKEN_PARAM = re.compile(r"(?i)([?&](?:access_)?token=)[^&#\s]*")


def redact_url(url: object) -> str:
    """The URL as text with the value of any ``token=`` parameter hidden."""
    return _TOKEN_PARAM.sub(r"\1***", str(url))


class ConcordError(Exception):
    """Base of every error concordctl raises on purpose.

    ``status`` is the HTTP status when the error came from a response.
    ``hint`` is what the user can do about it (may be empty).
    """

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, hint: str = "", status: int | None = None) -> None:
        self.message = message
        self.hint = hint
        self.status = status
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(ConcordError):
    exit_code = 2


class BadRequest(ConcordError):
    exit_code = 2


class NotAuthenticated(ConcordError):
    exit_code = 3


class NotFound(ConcordError):
    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        status: int | None = None,
        suggestions: list[str] | None = None,
    ) -> None:
        self.suggestions = suggestions or []
        super().__init__(message, hint=hint, status=status)


class Forbidden(ConcordError):
    exit_code = 5


class Unreachable(ConcordError):
    exit_code = 6


class ServerError(ConcordError):
    exit_code = 7


class ProtocolViolation(ConcordError):
    exit_code = 7


class RateLimited(ConcordError):
    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, hint=hint, status=status)


class TimedOut(ConcordError):
    exit_code = 124
