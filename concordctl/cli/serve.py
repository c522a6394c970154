"""``concordctl serve``: run the embedded Concord-compatible server."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Annotated

import typer

from concordctl.cli.app import app
from concordctl.errors import UsageError

_LOOPBACK_NAMES = frozenset(("localhost", "ip6-localhost"))


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int, tls: bool) -> str:
    transport = (
        "over TLS"
        if tls
        else "in clear text (passwords and tokens can be read on the network; use --tls-cert)"
    )
    return (
        f"warning: listening on {host}:{port}, not loopback: anyone who can reach this "
        "machine on that port can register an account, then read and post every chat "
        f"and channel; traffic goes {transport}."
    )


@app.command()
def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (loopback unless you mean it).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free one).")] = 8080,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="SQLite database file, or :memory: (nothing kept). "
            "[default: server.db under the user data dir]",
            show_default=False,
        ),
    ] = None,
    token_days: Annotated[
        float, typer.Option("--token-days", help="Validity of issued tokens, in days.")
    ] = 30.0,
    admin_password_stdin: Annotated[
        bool,
        typer.Option(
            "--admin-password-stdin",
            help="On first start, read the admin password from stdin instead of making one.",
        ),
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate: serve https and wss.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM key of --tls-cert.")
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin", help="Allow this browser origin (repeatable). Default: none."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-request log lines.")] = False,
    forwarded_allow_ips: Annotated[
        list[str] | None,
        typer.Option(
            "--forwarded-allow-ips",
            help="Believe X-Forwarded-For from this proxy address (repeatable; "
            "comma-separated works too). Default: from nobody.",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="Accept requests for this host name too (repeatable). Always accepted: "
            "the --host address and localhost.",
        ),
    ] = None,
) -> None:
    """Run a Concord-compatible server on this machine (SQLite, one process).

    On first start it creates user admin and channel general, and prints the
    admin password once. Stop it with Ctrl-C or SIGTERM.

    Example: concordctl serve --port 8080 --db ./concord.db
    """
    import asyncio
    import logging
    import signal

    from concordctl.server import EmbeddedServer, ServerConfig, default_db_path

    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a TCP port")
    if token_days <= 0:
        raise UsageError("--token-days must be positive")
    admin_password: str | None = None
    if admin_password_stdin:
        admin_password = sys.stdin.readline().rstrip("\r\n")
        if not admin_password:
            raise UsageError("--admin-password-stdin: stdin gave an empty password")

    db_path = db if db is not None else str(default_db_path())
    config = ServerConfig(
        host=host,
        port=port,
        db_path=db_path,
        token_days=token_days,
        admin_password=admin_password,
        log_requests=not quiet,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        cors_origins=tuple(cors_origin or ()),
        forwarded_allow_ips=tuple(
            ip.strip() for item in forwarded_allow_ips or () for ip in item.split(",") if ip.strip()
        ),
        allowed_hosts=tuple(allowed_host or ()),
    )
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    if not is_loopback(host):
        print(exposure_warning(host, port, tls_cert is not None), file=sys.stderr)

    async def run() -> None:
        server = EmbeddedServer(config)
        try:
            await server.start()
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            if server.admin_password is not None and admin_password is not None:
                print("concordctl: created user admin with the password from stdin", flush=True)
            elif server.admin_password is not None:
                print(
                    f"concordctl: created user admin with password: {server.admin_password}\n"
                    "concordctl: it is shown only this once; log in with "
                    f"`concordctl login --server {server.url} --username admin`",
                    flush=True,
                )
            elif admin_password is not None:
                print("concordctl: database already set up; admin password unchanged", flush=True)
            # Last, so whoever waits for this line has seen the password too.
            print(f"concordctl: serving on {server.url} (database: {db_path})", flush=True)
            await server.serve_until(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await server.stop()
            print("concordctl: server stopped", file=sys.stderr, flush=True)

    asyncio.run(run())
