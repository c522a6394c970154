"""How a failure is told to the user: one line on stderr, secrets hidden.

Typer-free, for the quick path of ``send`` as much as for the full command line.
"""

from __future__ import annotations

import re

from concordctl.errors import ConcordError, NotAuthenticated, NotFound, redact_url

__all__ = ["error_line", "scrub"]


# A JWT (three base64url parts, the first one always starting with "eyJ") or a
# bearer credential: hidden from any message we did not write ourselves.
_SECRETS = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*|(?i:bearer\s+)\S+")


def scrub(text: str) -> str:
    """``text`` with tokens and ``token=`` URL parameters hidden."""
    return _SECRETS.sub("***", redact_url(text))


def error_line(exc: ConcordError) -> str:
    """One line: the message, then what to do; server text made printable."""
    from concordctl.cli.sanitize import one_line

    message, hint = exc.message, exc.hint
    if isinstance(exc, NotFound) and exc.suggestions and "did you mean" not in str(exc).lower():
        hint = "did you mean: " + ", ".join(exc.suggestions[:5]) + "?"
    if (
        isinstance(exc, NotAuthenticated)
        and "login" not in str(exc)
        and "CONCORD_TOKEN" not in str(exc)
    ):
        hint = (hint + "; " if hint else "") + "run `concordctl login` or set CONCORD_TOKEN"
    line = f"{message}; {hint}" if hint else message
    return scrub(one_line(line))
