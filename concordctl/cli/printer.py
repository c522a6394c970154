"""Following the live stream for ``tail`` and ``wait``: printing events, and when to stop.

:class:`Printer` prints events in the chosen mode (NDJSON, through ``--jq``
if given, or one human line with names). :func:`follow` runs a stream until
its handler says stop, and ends it early for the two reasons a follower
must not wait out:

* the first connection fails (refused, TLS, not Concord, 401): retrying
  will not fix what never worked, so that is the command's error and exit
  code; reconnecting for ever is for a stream that was once connected;
* stdout is a pipe whose reader went away (``tail --json | head -1``): the
  command exits at once, quietly, not at the next event.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from concordctl.errors import ConcordError, ProtocolViolation, Unreachable

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.cli.render import Names
    from concordctl.client import Client
    from concordctl.protocol import Event
    from concordctl.stream import EventStream

__all__ = ["Printer", "first_failure", "follow"]


class Printer:
    """Prints events in the chosen mode: NDJSON (``--jq`` applied), or lines with names."""

    def __init__(
        self,
        client: Client,
        json: bool,
        after_flush: Callable[[], object] | None = None,
        jq: str | None = None,
    ) -> None:
        self._client = client
        self.json = json or jq is not None
        if self.json:
            from concordctl.cli.output import EventWriter

            self.writer = EventWriter(after_flush=after_flush, jq=jq)
        else:
            from concordctl.cli.output import stdout_console
            from concordctl.cli.render import Names

            self._console = stdout_console()
            self._names = Names()
            self._after_flush = after_flush

    @property
    def names(self) -> Names:
        return self._names

    async def print(self, event: Event) -> None:
        if self.json:
            self.writer.write(event)
            return
        from concordctl.cli.names import add_names, ids_of_event
        from concordctl.cli.render import event_line

        channels, users = ids_of_event(event)
        await add_names(self._client, self._names, channels, users)
        self._console.print(event_line(event, self._names))
        self._console.file.flush()

    def flushed(self) -> None:
        """In human mode every line is flushed as printed: run ``after_flush`` now."""
        if not self.json and self._after_flush is not None:
            self._after_flush()

    def close(self) -> None:
        if self.json:
            self.writer.close()


def first_failure(error: str | None, where: str = "the server") -> ConcordError:
    """The error for a stream whose first connection failed with ``error``."""
    text = error or "connection failed"
    if "HTTP" in text and "handshake" in text:
        return ProtocolViolation(
            f"the event stream of {where} was refused ({text})",
            hint="is this a Concord server? check --server or CONCORD_SERVER",
        )
    if "SSL" in text or "certificate" in text.lower():
        return Unreachable(
            f"cannot open the event stream of {where}: TLS error ({text})",
            hint="for a private CA pass --ca-cert PEM (login saves it in the profile)",
        )
    return Unreachable(
        f"cannot open the event stream of {where} ({text})",
        hint="is the server running? check --server or CONCORD_SERVER",
    )


def _stdout_pipe_fd() -> int | None:
    try:
        fd = sys.stdout.fileno()
        return fd if stat.S_ISFIFO(os.fstat(fd).st_mode) else None
    except (AttributeError, ValueError, OSError):
        return None


async def follow(
    events: Callable[[Callable[[Any], object]], EventStream],
    handle: Callable[[Event], Awaitable[bool]],
    where: str = "the server",
) -> None:
    """Feed ``events(on_state)`` to ``handle`` until it returns True.

    Raises the first connection's error (see the module docstring) and
    ``BrokenPipeError`` when stdout's reader is gone.
    """
    from concordctl.cli.output import StatusReporter

    reporter = StatusReporter()
    connected = False
    failed: asyncio.Future[ConcordError] = asyncio.get_running_loop().create_future()

    def on_state(state: Any) -> None:
        nonlocal connected
        kind = getattr(state, "state", "")
        if kind == "connected":
            connected = True
        if kind == "reconnecting" and not connected and not failed.done():
            failed.set_result(first_failure(getattr(state, "error", None), where))
            return
        reporter(state)

    async def consume() -> None:
        from contextlib import aclosing

        async with aclosing(events(on_state)) as stream:
            async for event in stream:
                if await handle(event):
                    return

    loop = asyncio.get_running_loop()
    pipe_closed: asyncio.Future[None] = loop.create_future()
    fd = _stdout_pipe_fd()
    if fd is not None:
        # The write end of a pipe polls as readable (EPOLLERR) once the reader is gone.
        def reader_gone() -> None:
            if not pipe_closed.done():
                pipe_closed.set_result(None)

        loop.add_reader(fd, reader_gone)
    task = asyncio.ensure_future(consume())
    try:
        waiters: list[asyncio.Future[Any]] = [task, failed, pipe_closed]
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        elif failed in done:
            raise failed.result()
        else:
            raise BrokenPipeError("stdout closed")
    finally:
        if fd is not None:
            loop.remove_reader(fd)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        reporter.close()
