"""How the server answers: JSON bodies and the contract's error responses.

A handler raises :class:`ApiError` (or :class:`Unauthorized`); the exception
handlers in ``routes.py`` turn it into ``{path, status, error, message}``, or
for a 401 an empty body with ``WWW-Authenticate: Basic realm="Realm"`` as
upstream's Spring Security sends.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from starlette.responses import Response

from concordctl import protocol as p

__all__ = [
    "ApiError",
    "Forbidden",
    "Unauthorized",
    "empty_response",
    "error_response",
    "json_response",
]


class ApiError(Exception):
    """A 4xx answer: ``status``, a one-line ``message`` for the user, extra ``headers``."""

    def __init__(self, status: int, message: str = "", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class Unauthorized(ApiError):
    """No valid token: 401 with an empty body."""

    def __init__(self) -> None:
        super().__init__(401)


class Forbidden(ApiError):
    """403: authenticated, but not allowed to do this (``message`` says who may)."""

    def __init__(self, message: str) -> None:
        super().__init__(403, message)


def error_response(path: str, status: int, message: str, headers: dict[str, str]) -> Response:
    """The contract's error response for ``status`` at ``path``."""
    if status == 401:
        return Response(
            b"", status_code=401, headers={"WWW-Authenticate": 'Basic realm="Realm"', **headers}
        )
    body = p.ErrorBody(path=path, status=status, error=HTTPStatus(status).phrase, message=message)
    return Response(
        p.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def json_response(value: Any, status: int = 200) -> Response:
    """``value`` (a protocol model or plain data) encoded as the wire's JSON."""
    return Response(p.encode(value), status_code=status, media_type="application/json")


def empty_response() -> Response:
    """200 with an empty body, as upstream answers deletes and password changes."""
    return Response(b"", status_code=200)
