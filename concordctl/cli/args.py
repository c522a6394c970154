"""Parsing of the argument values users type: times, regexes, message text.

Every parser raises :class:`concordctl.errors.UsageError` (exit 2) with one
line that names the option and shows an accepted form.
"""

from __future__ import annotations

import re
import sys
import time
from typing import TextIO

from concordctl.errors import UsageError

__all__ = [
    "compile_regex",
    "parse_time",
    "prompt_value",
    "read_new_password",
    "read_password",
    "read_text",
]

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|d|w)\s*(?:ago)?\s*$", re.I)
_UNIT_MS = {
    "ms": 1,
    "s": 1000,
    "sec": 1000,
    "m": 60_000,
    "min": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
}
# Epoch milliseconds as the wire has them (13 digits today); anything shorter
# is more likely a typo than a date in 1973.
_EPOCH_MS = re.compile(r"^(0|\d{12,})$")


def parse_time(text: str, *, option: str = "time", now_ms: int | None = None) -> int:
    """A point in time as epoch milliseconds.

    Accepts relative times meaning "that long ago" (``10m``, ``2h``, ``1d``,
    ``90s``, ``1.5h``, ``now``), ISO 8601 (``2026-11-25``,
    ``2026-11-25T14:00``, ``2026-11-25T14:00:00Z``, with an offset; without
    one it is local time), or epoch milliseconds.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    value = text.strip()
    if value.lower() == "now":
        return now
    m = _RELATIVE.match(value)
    if m:
        return now - round(float(m.group(1)) * _UNIT_MS[m.group(2).lower()])
    if _EPOCH_MS.match(value):
        return int(value)
    iso = value[:-1] + "+00:00" if value.endswith(("z", "Z")) else value
    try:
        from datetime import datetime

        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise UsageError(
            f"{option}: cannot read {text!r} as a time",
            hint="use 10m, 2h, 1d, an ISO 8601 date like 2026-11-25T14:00Z, or epoch ms",
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # naive: the user's local time
    return int(moment.timestamp() * 1000)


def compile_regex(pattern: str, *, option: str = "--match") -> re.Pattern[str]:
    """``pattern`` compiled, or a usage error that says what is wrong with it."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"{option}: invalid regular expression {pattern!r}: {exc}") from None


def read_text(text: str | None, *, stdin: TextIO | None = None) -> str:
    """The message: ``text``, or all of stdin when it is missing or ``-``.

    Multi-line input stays one message; only the final newline that every
    shell pipeline adds is dropped.
    """
    if text is not None and text != "-":
        return text
    stream = stdin if stdin is not None else sys.stdin
    if stream.isatty():
        print("concordctl: reading the message from the terminal; end with Ctrl-D", file=sys.stderr)
    data = stream.read()
    if data.endswith("\r\n"):
        data = data[:-2]
    elif data.endswith("\n"):
        data = data[:-1]
    if not data.strip():
        raise UsageError("nothing to send: the message is empty", hint="give TEXT or pipe it in")
    return data


def read_password(
    password_stdin: bool, *, confirm: bool = False, stdin: TextIO | None = None
) -> str:
    """The password: first line of stdin with ``--password-stdin``, else
    ``CONCORD_PASSWORD``, else a prompt when stdin is a terminal.

    Never a command-line flag: flags show up in ``ps`` and shell history.
    """
    import os

    stream = stdin if stdin is not None else sys.stdin
    if password_stdin:
        line = stream.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
        if not password:
            raise UsageError("--password-stdin: no password on stdin")
        return password
    env = os.environ.get("CONCORD_PASSWORD")
    if env:
        return env
    if stream.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Password again: ") != password:
            raise UsageError("the two passwords differ")
        if not password:
            raise UsageError("empty password")
        return password
    raise UsageError(
        "no password given",
        hint="pipe it in with --password-stdin or set CONCORD_PASSWORD",
    )


def prompt_value(label: str, *, stdin: TextIO | None = None) -> str | None:
    """Ask for ``label`` on a terminal; None when stdin is not one."""
    stream = stdin if stdin is not None else sys.stdin
    if not stream.isatty():
        return None
    print(f"{label}: ", end="", file=sys.stderr, flush=True)
    value = stream.readline().strip()
    return value or None


def read_new_password(password_stdin: bool, *, stdin: TextIO | None = None) -> str:
    """A new password: stdin's first line with ``--password-stdin``, else asked twice.

    ``CONCORD_PASSWORD`` is the current password, so it is never taken as the new one.
    """
    stream = stdin if stdin is not None else sys.stdin
    if password_stdin:
        return read_password(True, stdin=stream)
    if stream.isatty():
        import getpass

        password = getpass.getpass("New password: ")
        if not password:
            raise UsageError("empty password")
        if getpass.getpass("New password again: ") != password:
            raise UsageError("the two passwords differ")
        return password
    raise UsageError("no new password given", hint="pipe it in with --password-stdin")
