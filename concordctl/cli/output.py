"""Everything the command line writes, and where: stdout for data, stderr for status.

Two modes:

* ``--json``: exactly the server's JSON, camelCase, through
  :mod:`concordctl.protocol` (one document per command, or one event per
  line for ``tail``, flushed so ``concordctl tail --json | jq`` is live),
  optionally filtered by ``--jq EXPR`` (the ``jq`` package, imported only
  then). rich is never imported in this mode.
* human: the lines and renderables of :mod:`concordctl.cli.render`, written
  with rich. Colours only on a terminal and never with ``NO_COLOR``.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any

from concordctl.errors import UsageError
from concordctl.protocol import Chat, Event, FullChannel, FullUser, encode, encode_event

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console
    from rich.status import Status

    from concordctl.cli.render import Names

__all__ = [
    "EventWriter",
    "StatusReporter",
    "color_enabled",
    "compile_jq",
    "print_channels",
    "print_chats",
    "print_json",
    "print_users",
    "stderr_console",
    "stdout_console",
]


def color_enabled(stream: IO[str] | None = None) -> bool:
    """Whether colours go to ``stream``: a terminal, and no ``NO_COLOR``."""
    s = stream if stream is not None else sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return s.isatty()
    except (AttributeError, ValueError):
        return False


def _console(stream: IO[str]) -> Console:
    from rich.console import Console

    class QuietOnClosedPipe(Console):
        # rich exits 1 when the reader goes away; for us that is a normal end
        # (`concordctl history | head`): app.run turns it into a quiet 0.
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError("stdout closed")

    color = color_enabled(stream)
    return QuietOnClosedPipe(
        file=stream,
        # NO_COLOR: no escape codes at all (rich alone would keep bold and dim).
        color_system="auto" if color else None,
        no_color=not color or None,
        highlight=False,
        emoji=False,
        markup=False,
        soft_wrap=True,
    )


def stdout_console() -> Console:
    return _console(sys.stdout)


def stderr_console() -> Console:
    return _console(sys.stderr)


# --------------------------------------------------------------------------
# jq
# --------------------------------------------------------------------------

_jq_programs: dict[str, Any] = {}


def compile_jq(expr: str) -> Any:
    """The compiled jq program for ``expr``; a usage error if it does not compile."""
    program = _jq_programs.get(expr)
    if program is None:
        import jq  # type: ignore[import-not-found]  # no stubs

        try:
            program = jq.compile(expr)
        except ValueError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "syntax error"
            raise UsageError(f"--jq: cannot compile {expr!r}: {first}") from None
        _jq_programs[expr] = program
    return program


def jq_lines(expr: str, document: bytes) -> bytes:
    """What ``jq -r EXPR`` prints for ``document``: one result a line, strings raw.

    jq's numbers are doubles: an id past 2**53 (every snowflake) comes out
    of it rounded, a different id. Each such number in the output is put
    back to the id of the input it was rounded from; two ids that round to
    the same double cannot be told apart, and a warning says so.
    """
    import json

    try:
        results = compile_jq(expr).input_text(document.decode("utf-8")).all()
    except ValueError as exc:
        raise UsageError(f"--jq {expr!r} failed: {str(exc).strip()}") from None
    exact = _rounded_ids(document)
    out = []
    for value in results:
        if exact:
            value = _unround(value, exact)
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        out.append(text.encode("utf-8") + b"\n")
    return b"".join(out)


_LONG_INT = re.compile(rb"(?<![\w.])-?\d{16,}(?![\w.])")
_EXACT_LIMIT = 2**53
_warned_ambiguous = False


def _rounded_ids(document: bytes) -> dict[int, int | None]:
    """What jq turns each integer past 2**53 of ``document`` into, and back (None: two)."""
    exact: dict[int, int | None] = {}
    for m in _LONG_INT.finditer(document):
        value = int(m.group())
        if abs(value) <= _EXACT_LIMIT:
            continue
        rounded = int(float(value))
        if exact.setdefault(rounded, value) not in (value, None):
            exact[rounded] = None
    return exact


def _unround(value: Any, exact: dict[int, int | None]) -> Any:
    global _warned_ambiguous
    if isinstance(value, dict):
        return {k: _unround(v, exact) for k, v in value.items()}
    if isinstance(value, list):
        return [_unround(v, exact) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool) and value in exact:
        original = exact[int(value)]
        if original is not None:
            return original
        if not _warned_ambiguous:
            _warned_ambiguous = True
            print(
                f"concordctl: --jq: {int(value)} may be off by a little: jq rounds numbers "
                "past 2^53 and two ids of the input round to it; --json shows them exactly",
                file=sys.stderr,
            )
    return value


# --------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------


def print_json(value: Any, *, jq: str | None = None) -> None:
    """One JSON document (a model, or a list of models) on stdout, or ``--jq``'s output."""
    document = encode(value)
    data = jq_lines(jq, document) if jq is not None else document + b"\n"
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


class EventWriter:
    """Writes events as NDJSON to stdout; every line is out before we wait.

    Outside an event loop each line is flushed at once. Inside one, lines
    are collected while events keep arriving without a pause and flushed as
    soon as the loop gets control back, that is before the tail waits for
    the next event: a reader (``| jq``) sees each event as soon as it would
    with a flush per line, but a burst of 100,000 events costs a few dozen
    ``write`` calls instead of 100,000. :meth:`close` flushes what is left.

    ``after_flush`` runs after every flush, once what was written is out of
    the process: ``tail --checkpoint`` writes its checkpoint there, so the
    file never names a chat whose line could still be lost with the process.
    """

    #: Flush early when this many bytes are pending, to bound memory.
    MAX_PENDING = 1 << 16

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        after_flush: Callable[[], object] | None = None,
        jq: str | None = None,
    ) -> None:
        text = stream if stream is not None else sys.stdout
        text.flush()
        self._buffer: IO[bytes] = getattr(text, "buffer")  # noqa: B009 (IO[str] hides it)
        self._pending: list[bytes] = []
        self._size = 0
        self._scheduled = False
        self._after_flush = after_flush
        self._jq = jq
        # A failure in a scheduled flush (the reader went away, the checkpoint
        # cannot be written) is kept and raised by the next write, in the
        # tail's own task.
        self._error: Exception | None = None

    def write(self, event: Event) -> None:
        # write_raw inlined: this runs once per event of `tail --json`.
        if self._error is not None:
            raise self._error
        line = encode_event(event)
        if self._jq is not None:
            line = jq_lines(self._jq, line).removesuffix(b"\n")
            if not line:
                return
        self._pending.append(line)
        self._size += len(line) + 1
        if self._size >= self.MAX_PENDING:
            self.flush()
        elif not self._scheduled:
            self._schedule()

    def write_raw(self, line: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._pending.append(line)
        self._size += len(line) + 1
        if self._size >= self.MAX_PENDING:
            self.flush()
        elif not self._scheduled:
            self._schedule()

    def request_flush(self) -> None:
        """Flush (and run ``after_flush``) when the loop next gets control."""
        if self._error is not None:
            raise self._error
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        loop.call_soon(self._scheduled_flush)
        self._scheduled = True

    def _scheduled_flush(self) -> None:
        try:
            self.flush()
        except Exception as exc:
            self._error = exc

    def flush(self) -> None:
        self._scheduled = False
        if self._error is not None:
            raise self._error
        if self._pending:
            self._pending.append(b"")
            data = b"\n".join(self._pending)
            self._pending.clear()
            self._size = 0
            self._buffer.write(data)
            self._buffer.flush()
        if self._after_flush is not None:
            self._after_flush()

    close = flush


# --------------------------------------------------------------------------
# Human: whole outputs
# --------------------------------------------------------------------------


def print_chats(chats: Iterable[Chat], names: Names) -> None:
    """Chats one per line, in the order given."""
    from concordctl.cli.render import chat_line

    console = stdout_console()
    now = time.time()
    for chat in chats:
        console.print(chat_line(chat, names, now=now))


def print_channels(channels: Sequence[FullChannel], title: str = "channels") -> None:
    from concordctl.cli.render import channel_tree

    stdout_console().print(channel_tree(channels, title))


def print_users(users: Sequence[FullUser]) -> None:
    from concordctl.cli.render import user_table

    stdout_console().print(user_table(users))


# --------------------------------------------------------------------------
# Connection status on stderr
# --------------------------------------------------------------------------


class StatusReporter:
    """Shows the stream's connection state on stderr while it is not live.

    On a terminal: a rich status line (spinner) while reconnecting, cleared
    once connected again. Otherwise: one plain line when the connection is
    lost and one when it is back, so logs stay readable.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        try:
            self._tty = self._stream.isatty()
        except (AttributeError, ValueError):
            self._tty = False
        self._status: Status | None = None
        self._down = False

    def __call__(self, state: Any) -> None:
        """``on_state`` callback of ``Client.events`` (a ``StreamState``)."""
        kind = getattr(state, "state", "")
        if kind == "reconnecting":
            self._reconnecting(state)
        elif kind == "connected":
            self._connected()
        elif kind == "closed":
            self.close()

    def _reconnecting(self, state: Any) -> None:
        error = getattr(state, "error", None) or "connection lost"
        attempt = getattr(state, "attempt", 0)
        delay = getattr(state, "delay", None)
        when = f", next try in {delay:.1f}s" if delay else ""
        message = f"reconnecting (attempt {attempt}{when}): {error}"
        if self._tty:
            if self._status is None:
                self._status = _console(self._stream).status(message, spinner="dots")
                self._status.start()
            else:
                self._status.update(message)
        elif not self._down:
            print(f"concordctl: {message}", file=self._stream, flush=True)
        self._down = True

    def _connected(self) -> None:
        if self._down:
            self.close()
            print("concordctl: reconnected", file=self._stream, flush=True)
        self._down = False

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
