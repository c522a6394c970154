"""Options shared by every command that talks to a server, defined once.

A command declares them as parameters and builds its client with
:func:`client_from_options`::

    @app.command()
    def whoami(
        server: ServerOption = None,
        profile: ProfileOption = None,
        ca_cert: CaCertOption = None,
        insecure: InsecureOption = False,
        json: JsonOption = False,
    ) -> None:
        async def body() -> None:
            async with client_from_options(server, profile, ca_cert, insecure) as c:
                ...
        run_async(body())

Only the flags are read here. The environment (``CONCORD_SERVER``,
``CONCORD_TOKEN``, ``CONCORD_USERNAME``, ``CONCORD_PASSWORD``,
``CONCORD_PROFILE``, ``CONCORD_CONFIG``) and the profile file are resolved by
the library (``concordctl.config``), so the command line and ``Client()``
agree on precedence: flag, then environment, then profile.

Nothing heavy is imported at module level: the client (httpx) is imported
when a command builds one, so ``--help`` and ``--version`` stay fast.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.client import Client
    from concordctl.rest import RestClient

__all__ = [
    "CaCertOption",
    "Connection",
    "InsecureOption",
    "JsonOption",
    "ProfileOption",
    "ServerOption",
    "client_from_options",
    "rest_from_options",
    "run_async",
]

T = TypeVar("T")

_CONNECTION_PANEL = "Connection"

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
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
        help="Profile of the config file to use. [env: CONCORD_PROFILE]",
        show_default=False,
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
CaCertOption = Annotated[
    Path | None,
    typer.Option(
        "--ca-cert",
        help="PEM file of a private CA to trust for https:// and wss://. [env: CONCORD_CA_CERT]",
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
        help="Do not verify TLS certificates (dangerous: warns on stderr).",
        rich_help_panel=_CONNECTION_PANEL,
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print the server's JSON (camelCase) instead of text."),
]


@dataclass(frozen=True)
class Connection:
    """The connection flags of one command line (None: not given)."""

    server: str | None = None
    profile: str | None = None
    ca_cert: Path | None = None
    insecure: bool = False

    def client(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> Client:
        """A (not yet entered) :class:`concordctl.Client` for these flags."""
        from concordctl.client import Client

        return Client(
            self.server,
            username=username,
            password=password,
            token=token,
            profile=self.profile,
            ca_cert=str(self.ca_cert) if self.ca_cert is not None else None,
            insecure=self.insecure,
            timeout=timeout,
        )


def client_from_options(
    server: str | None = None,
    profile: str | None = None,
    ca_cert: Path | None = None,
    insecure: bool = False,
    *,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> Client:
    """Build a client from the shared connection options of a command.

    Use it as ``async with client_from_options(...) as c:``; settings the
    flags leave out come from the environment and the profile.
    """
    return Connection(server, profile, ca_cert, insecure).client(
        username=username, password=password, token=token, timeout=timeout
    )


def rest_from_options(
    server: str | None = None,
    profile: str | None = None,
    ca_cert: Path | None = None,
    insecure: bool = False,
    *,
    timeout: float = 10.0,
) -> RestClient:
    """Just the REST client, for commands that need nothing else (``send``).

    ``concordctl.client`` imports the websocket stack; a one-shot REST
    command should not pay for that at start-up. Same settings resolution.
    """
    from concordctl.config import resolve_settings, ssl_context
    from concordctl.rest import RestClient

    settings = resolve_settings(
        server,
        profile=profile,
        ca_cert=str(ca_cert) if ca_cert is not None else None,
        insecure=insecure or None,
        timeout=timeout,
    )
    tls = ssl_context(settings)  # None for http://
    return RestClient(
        settings.base_url,
        username=settings.username,
        password=settings.password,
        token=settings.token,
        timeout=settings.timeout,
        # For a plain http:// server there is no certificate to verify, and
        # httpx's default (verify=True) would load the whole CA bundle, about
        # 90 ms, for nothing. Redirects are not followed, so no request of
        # this client can reach an https:// URL unverified.
        verify=tls if tls is not None else False,
    )


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; Ctrl-C surfaces as KeyboardInterrupt (exit 130)."""
    import asyncio

    return asyncio.run(coro)
