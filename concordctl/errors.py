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

import json
import re
from collections.abc import Iterable
from typing import ClassVar, TypeVar

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
    "redact_secrets",
    "redact_text",
    "redact_url",
]

_TOKEN_PARAM = re.compile(r"(?i)([?&](?:access_)?token=)[^&#\s]*")


def redact_url(url: object) -> str:
    """The URL as text with the value of any ``token=`` parameter hidden."""
    return _TOKEN_PARAM.sub(r"\1***", str(url))


def _spellings(secret: str) -> set[str]:
    """How a secret may come back in a message: as is, JSON-escaped, URL-encoded."""
    from urllib.parse import quote, quote_plus

    escaped = json.dumps(secret)[1:-1]
    return {
        secret,
        escaped,
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret),
    }


def redact_text(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every (non-trivial) secret replaced by ``***``."""
    for secret in secrets:
        if not secret or len(secret) < 3:  # "a" is not a secret worth hiding, it is a letter
            continue
        for spelling in sorted(_spellings(secret), key=len, reverse=True):
            text = text.replace(spelling, "***")
    return text


def redact_secrets(error: E, secrets: Iterable[str | None]) -> E:
    """``error`` with the secrets gone from its message and hint (changed in place).

    A server that echoes the password of a failed login in its error message
    must not get it printed: every message the client raises passes here.
    """
    secrets = [s for s in secrets if s]
    if secrets:
        error.message = redact_text(error.message, secrets)
        error.hint = redact_text(error.hint, secrets)
        error.args = (error.message,)
    return error


E = TypeVar("E", bound="ConcordError")


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
