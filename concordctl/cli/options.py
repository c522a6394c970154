"""What every command that talks to a server shares, defined once.

A command declares only its own parameters and one ``conn: Connection``;
:func:`server_command` adds the connection flags (``--server/-s``,
``--profile/-p``, ``--ca-cert``, ``--insecure``, ``--timeout``) and, with
``json=True``, ``--json`` and ``--jq``, to what Typer sees::

    @server_command(app, json=True)
    def whoami(conn: Connection) -> None:
        async def body(c: Client) -> None:
            me = await c.me()
            conn.emit(me, lambda: print(me.username))
        conn.run(body)

:meth:`Connection.run` opens the client, runs the body under the command's
deadline (``--timeout`` / ``CONCORD_TIMEOUT``, exit 124) and closes it.

Only the flags are read here. The environment (``CONCORD_SERVER``,
``CONCORD_TOKEN``, ...) and the profile file are resolved by the library
(``concordctl.config``), so the command line and ``Client()`` agree on
precedence: flag, then environment, then profile.

Nothing heavy is imported at module level: the client (httpx) is imported
when a command builds one, so ``--help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import typing
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from concordctl.errors import ConcordError, TimedOut, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.client import Client
    from concordctl.config import Settings
    from concordctl.rest import RestClient

__all__ = [
    "CaCertOption",
    "Connection",
    "InsecureOption",
    "JqOption",
    "JsonOption",
    "ProfileOption",
    "ServerOption",
    "TimeoutOption",
    "default_timeout",
    "run_async",
    "server_command",
]

T = TypeVar("T")

_CONNECTION_PANEL = "Connection"
ENV_TIMEOUT = "CONCORD_TIMEOUT"
#: The documented deadline of one command (and of each request) without --timeout.
DEFAULT_TIMEOUT = 10.0

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
        metavar="URL",
        help="Server URL, e.g. http://127.0.0.1:8080. [env: CONCORD_SERVER]",
        show_default=False,
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile",
        "-p",
        metavar="NAME",
        help="Profile of the config file to use. [env: CONCORD_PROFILE]",
        show_default=False,
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
CaCertOption = Annotated[
    Path | None,
    typer.Option(
        "--ca-cert",
        metavar="PEM",
        help="PEM file of a private CA to trust for https:// and wss:// (login saves it in "
        "the profile). [env: CONCORD_CA_CERT]",
        show_default=False,
        exists=True,
        dir_okay=False,
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Do not verify TLS certificates (dangerous: warns on stderr; login saves it).",
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=0,
        metavar="SECONDS",
        help="Give up after this many seconds, exit 124 (default 10). [env: CONCORD_TIMEOUT]",
        show_default=False,
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print the server's JSON (camelCase) instead of text."),
]
JqOption = Annotated[
    str | None,
    typer.Option(
        "--jq",
        metavar="EXPR",
        help="Filter the JSON with this jq expression (implies --json); strings print raw.",
        show_default=False,
    ),
]


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
    ) -> Client:
        """A (not yet entered) :class:`concordctl.Client` for these flags."""
        from concordctl.client import Client

        settings = self.settings(username=username, password=password, token=token)
        return Client(settings=settings)

    def rest(self) -> RestClient:
        """Just the REST client, for one-shot commands that need nothing else.

        ``concordctl.client`` still imports the websocket stack eagerly; a
        CI notification should not pay for that at start-up.
        """
        from concordctl.config import ssl_context
        from concordctl.rest import RestClient

        settings = self.settings()
        tls = ssl_context(settings)  # None for http://
        # For http:// there is nothing to verify, and httpx's default would load
        # the CA bundle (~90 ms) for nothing. Redirects are not followed.
        return RestClient(
            settings.base_url,
            username=settings.username,
            password=settings.password,
            token=settings.token,
            timeout=settings.timeout,
            verify=tls if tls is not None else False,
        )

    def run(self, body: Callable[[Client], Awaitable[T]], *, deadline: bool = True) -> T:
        """Open the client, run ``body(client)`` under the deadline, close it."""

        async def main() -> T:
            async with self.client() as c:
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
                raise
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


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; Ctrl-C surfaces as KeyboardInterrupt (exit 130)."""
    import asyncio

    return asyncio.run(coro)


_CONNECTION_PARAMS: list[tuple[str, Any, Any]] = [
    ("server", ServerOption, None),
    ("profile", ProfileOption, None),
    ("ca_cert", CaCertOption, None),
    ("insecure", InsecureOption, False),
]
_TIMEOUT_PARAM = ("timeout", TimeoutOption, None)
_JSON_PARAMS: list[tuple[str, Any, Any]] = [
    ("json", JsonOption, False),
    ("jq", JqOption, None),
]


def server_command(
    group: typer.Typer,
    name: str | None = None,
    *,
    json: bool = False,
    timeout: bool = True,
    label: str | None = None,
    callback: bool = False,
    **command_kwargs: Any,
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Register ``func(..., conn: Connection)`` as a command of ``group``.

    The connection flags (and ``--json``/``--jq`` with ``json=True``, and
    ``--timeout`` unless ``timeout=False``: tail and wait define their own)
    are added to the command; ``func`` receives them as one :class:`Connection`.
    A ``--jq`` expression is compiled before anything is sent, so a typo is
    a usage error (exit 2), not a failure after the fact.
    """
    extra = list(_CONNECTION_PARAMS)
    if timeout:
        extra.append(_TIMEOUT_PARAM)
    if json:
        extra += _JSON_PARAMS

    def decorate(func: Callable[..., T]) -> Callable[..., T]:
        hints = typing.get_type_hints(func, include_extras=True)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(func).parameters.values()
            if p.name != "conn"
        ]
        names = {p.name for p in own}
        added = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a, default=d)
            for n, a, d in extra
            if n not in names
        ]
        command_name = label or name or func.__name__.replace("_", "-")

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> T:
            values = {n: kwargs.pop(n) for n, _, _ in extra if n in kwargs and n not in names}
            conn = Connection(command=command_name, **values)
            if conn.jq is not None:
                from concordctl.cli.output import compile_jq

                compile_jq(conn.jq)
            return func(**kwargs, conn=conn)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        if callback:  # a group's own options: ``concordctl channels --json``
            group.callback(invoke_without_command=True, **command_kwargs)(wrapper)
        else:
            group.command(name, **command_kwargs)(wrapper)
        return func

    return decorate


def note(message: str) -> None:
    """A status line on stderr (data goes to stdout)."""
    print(message, file=sys.stderr)
