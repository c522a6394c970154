"""The one filter for text that came from a server and is printed for humans.

Chat content, channel and user names, a server's error message, a "did you
mean" suggestion: any of them may carry escape sequences that move the
cursor, recolour or retitle the terminal, or bidirectional overrides that
make a line read differently from what it is. Everything the command line
prints for a person passes through :func:`one_line` (``--json`` output is
JSON, whose encoder escapes control characters already).
"""

from __future__ import annotations

import re

__all__ = ["one_line"]

# C0 and C1 controls (newline and tab are handled first), DEL, and the
# Unicode bidirectional controls: shown as U+FFFD.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def one_line(text: str) -> str:
    """``text`` as one printable line: newlines become ``⏎``, controls U+FFFD."""
    flat = text.replace("\r\n", "\n").replace("\n", " ⏎ ").replace("\t", " ")
    return _UNSAFE.sub("\ufffd", flat)
