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
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from concordctl.cli.connection import Connection, default_timeout, note, run_async

if TYPE_CHECKING:  # pragma: no cover
    pass

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
    "note",
    "run_async",
    "server_command",
]

T = TypeVar("T")

_CONNECTION_PANEL = "Connection"

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
