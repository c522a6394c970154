"""The connection of one command line: settings, client, deadline, output mode.

Typer-free, so that the quick path of ``concordctl send`` (:mod:`concordctl.cli.quick`)
uses the very same code as the full command line without importing Typer.
:mod:`concordctl.cli.options` declares the flags that fill a :class:`Connection`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from concordctl.errors import ConcordError, TimedOut, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.client import Client
    from concordctl.config import Settings

__all__ = ["DEFAULT_TIMEOUT", "ENV_TIMEOUT", "Connection", "default_timeout", "note", "run_async"]

T = TypeVar("T")

ENV_TIMEOUT = "CONCORD_TIMEOUT"
#: The documented deadline of one command (and of each request) without --timeout.
DEFAULT_TIMEOUT = 10.0


def default_timeout() -> float:
    """``CONCORD_TIMEOUT`` in seconds, else the documented 10 s."""
    raw = os.environ.get(ENV_TIMEOUT, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(
            f"{ENV_TIMEOUT}={raw!r} is not a number of seconds", hint="e.g. CONCORD_TIMEOUT=30"
        ) from None
    if value <= 0:
        raise UsageError(f"{ENV_TIMEOUT} must be positive, not {raw!r}")
    return value


@dataclass
class Connection:
    """The connection (and output) flags of one command line; None: not given.

    ``timeout`` is the command's deadline: the whole command, every request
    in it included, must be done within it (exit 124 otherwise). ``tail`` and
    ``wait`` have their own ``--timeout`` (how long to wait); for them
    ``timeout`` bounds each request only.
    """

    server: str | None = None
    profile: str | None = None
    ca_cert: Path | None = None
    insecure: bool = False
    timeout: float | None = None
    json: bool = False
    jq: str | None = None
    command: str = "concordctl"
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def deadline(self) -> float:
        return self.timeout if self.timeout is not None else default_timeout()

    def settings(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
    ) -> Settings:
        """The resolved settings (flag > environment > profile), checked.

        No server at all means nobody logged in: exit 3, with what to do.
        """
        from concordctl.cli.diagnose import check_server_url
        from concordctl.config import resolve_settings
        from concordctl.errors import NotAuthenticated

        settings = resolve_settings(
            self.server,
            username=username,
            password=password,
            token=token,
            profile=self.profile,
            ca_cert=str(self.ca_cert) if self.ca_cert is not None else None,
            insecure=self.insecure or None,
            timeout=min(self.deadline, DEFAULT_TIMEOUT),
        )
        if self.command != "login":
            import os

            from concordctl.cli.diagnose import check_profile

            check_profile(self.profile or os.environ.get("CONCORD_PROFILE"), settings.config_path)
        if not settings.server:
            raise NotAuthenticated(
                "not logged in: no server and no credentials given",
                hint="run `concordctl login --server URL --username NAME`, "
                "or set CONCORD_SERVER and CONCORD_TOKEN",
            )
        check_server_url(settings)
        self._settings = settings
        return settings

    def client(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        one_shot: bool = False,
    ) -> Client:
        """A (not yet entered) :class:`concordctl.Client` for these flags.

        ``one_shot``: the client serves one command under its deadline, so its
        requests take the transport that starts quickest (``threaded_http``).
        """
        from concordctl.client import Client

        settings = self.settings(username=username, password=password, token=token)
        return Client(settings=settings, threaded_http=one_shot)

    def run(self, body: Callable[[Client], Awaitable[T]], *, deadline: bool = True) -> T:
        """Open the client, run ``body(client)`` under the deadline, close it.

        ``deadline=False`` is for a command that waits (``tail``, ``wait``).
        """

        async def main() -> T:
            async with self.client(one_shot=deadline) as c:
                return await body(c)

        return self.run_coro(main(), deadline=deadline)

    def run_coro(self, coro: Coroutine[Any, Any, T], *, deadline: bool = True) -> T:
        """Run ``coro`` under the command's deadline (exit 124 past it).

        A failure gets one more look (:func:`concordctl.cli.diagnose.diagnose`)
        so that it says what is really wrong.
        """
        limit = self.deadline

        async def bounded() -> T:
            import asyncio

            if not deadline:
                return await coro
            try:
                async with asyncio.timeout(limit):
                    return await coro
            except TimeoutError:
                raise TimedOut(
                    f"{self.command}: no answer from the server within {limit:g}s",
                    hint="raise it with --timeout SECONDS or CONCORD_TIMEOUT",
                ) from None

        try:
            return run_async(bounded())
        except ConcordError as exc:
            if self._settings is None or isinstance(exc, (TimedOut, UsageError)):
                raise
            from concordctl.cli.diagnose import diagnose

            better = diagnose(self._settings, exc)
            if better is exc:
                raise _as_asked(exc, self.command) from None
            raise better from exc

    @property
    def wants_json(self) -> bool:
        return self.json or self.jq is not None

    def emit(self, value: Any, human: Callable[[], object] | None = None) -> None:
        """``value`` as JSON (through ``--jq``) in JSON mode, else ``human()``."""
        if self.wants_json or human is None:
            from concordctl.cli.output import print_json

            print_json(value, jq=self.jq)
        else:
            human()


_INTERNAL_STEP = re.compile(r"^[^:]{1,80} failed: ")


def _as_asked(exc: ConcordError, command: str) -> ConcordError:
    """``exc`` named after what the user asked (``send: ...``), not the client's
    internal step (``list channels failed: ...``)."""
    if _INTERNAL_STEP.match(exc.message):
        exc.message = f"{command}: " + _INTERNAL_STEP.sub("", exc.message, count=1)
        exc.args = (exc.message,)
    return exc


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; Ctrl-C surfaces as KeyboardInterrupt (exit 130)."""
    import asyncio

    return asyncio.run(coro)


def note(message: str) -> None:
    """A status line on stderr (data goes to stdout)."""
    print(message, file=sys.stderr)
