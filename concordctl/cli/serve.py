"""``concordctl serve``: run the embedded Concord-compatible server."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Annotated

import typer

from concordctl.cli.app import app
from concordctl.errors import UsageError

#: Node numbers fit in the 10 bits the snowflake gives them (``server/cluster.py``).
MAX_NODE_ID = 1023

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


def parse_node_id(text: str) -> int | None:
    """``auto`` (None: allocated in the database at start) or a number 0-1023."""
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--node-id {text!r}: give auto or a number 0-{MAX_NODE_ID}") from None
    if not 0 <= value <= MAX_NODE_ID:
        raise UsageError(f"--node-id {value}: give auto or a number 0-{MAX_NODE_ID}")
    return value


def _status(line: str) -> None:
    """Status lines go to stderr: stdout stays free for what a script captures."""
    print(f"concordctl: {line}", file=sys.stderr, flush=True)


@app.command()
def serve(
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Address to listen on (loopback unless you mean it).", metavar="HOST"
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="TCP port (0: any free one).", metavar="PORT")
    ] = 8080,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="CONCORD_DB",
            metavar="PATH|URL",
            help="SQLite database file, :memory: (nothing kept), or postgresql://... "
            "(every serve on that database is a node of one server). Its directory must "
            "exist. [default: server.db under the user data dir]",
            show_default=False,
        ),
    ] = None,
    node_id: Annotated[
        str,
        typer.Option(
            "--node-id",
            metavar="N|auto",
            help="This node's number in ids (PostgreSQL): auto takes a free one from the "
            f"database; or 0-{MAX_NODE_ID}.",
        ),
    ] = "auto",
    token_days: Annotated[
        float,
        typer.Option("--token-days", help="Validity of issued tokens, in days.", metavar="DAYS"),
    ] = 30.0,
    admin_password_stdin: Annotated[
        bool,
        typer.Option(
            "--admin-password-stdin",
            help="Read the admin password from stdin (first start, or "
            "--reset-admin-password) instead of making one.",
        ),
    ] = False,
    reset_admin_password: Annotated[
        bool,
        typer.Option(
            "--reset-admin-password",
            help="Give user admin a new password, print it once (stdout) and exit; "
            "old admin tokens stop working.",
        ),
    ] = False,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="PEM certificate: serve https and wss.", metavar="PEM"),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM key of --tls-cert.", metavar="PEM")
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            metavar="ORIGIN",
            help="Allow this browser origin (repeatable). Default: none.",
        ),
    ] = None,
    open_channels: Annotated[
        bool,
        typer.Option(
            "--open-channels",
            help="Anyone may create, edit and delete channels and edit the server "
            "(upstream's rule). Default: admins only.",
        ),
    ] = False,
    no_registration: Annotated[
        bool,
        typer.Option(
            "--no-registration", help="Refuse new accounts (POST /api/users/register: 403)."
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No per-request or per-websocket log lines."),
    ] = False,
    forwarded_allow_ips: Annotated[
        list[str] | None,
        typer.Option(
            "--forwarded-allow-ips",
            metavar="ADDRESS",
            help="Believe X-Forwarded-For from this proxy address (repeatable; "
            "comma-separated works too). Default: from nobody.",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            metavar="NAME",
            help="Accept requests for this host name too (repeatable). Always accepted: "
            "the --host address and localhost.",
        ),
    ] = None,
) -> None:
    """Run a Concord-compatible server on this machine (SQLite, or nodes on PostgreSQL).

    On first start it creates user admin and channel general, and prints the
    admin password once (stderr). Stop it with Ctrl-C or SIGTERM.

    Example: concordctl serve --port 8080 --db ./concord.db
    """
    import asyncio
    import logging
    import signal

    from concordctl.server import EmbeddedServer, ServerConfig, default_db_path
    from concordctl.server.config import display_db
    from concordctl.server.runner import StartError
    from concordctl.server.runner import reset_admin_password as reset
    from concordctl.server.store import StoreError

    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a TCP port")
    if token_days <= 0:
        raise UsageError("--token-days must be positive")
    fixed_node = parse_node_id(node_id)
    admin_password: str | None = None
    if admin_password_stdin:
        admin_password = sys.stdin.readline().rstrip("\r\n")
        if not admin_password:
            raise UsageError("--admin-password-stdin: stdin gave an empty password")

    if db is None:
        default = default_db_path()
        default.parent.mkdir(parents=True, exist_ok=True)  # our own directory, not a typo
        db_path = str(default)
    else:
        db_path = db
    shown_db = display_db(db_path)
    config = ServerConfig(
        host=host,
        port=port,
        db_path=db_path,
        node_id=fixed_node,
        token_days=token_days,
        admin_password=admin_password,
        log_requests=not quiet,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        cors_origins=tuple(cors_origin or ()),
        open_channels=open_channels,
        registration=not no_registration,
        forwarded_allow_ips=tuple(
            ip.strip() for item in forwarded_allow_ips or () for ip in item.split(",") if ip.strip()
        ),
        allowed_hosts=tuple(allowed_host or ()),
    )
    if reset_admin_password:
        try:
            new_password = asyncio.run(reset(config, admin_password))
        except StartError as exc:
            raise UsageError(str(exc)) from None
        if admin_password is None:
            print(new_password, flush=True)
            _status("user admin has a new password (above); it is shown only this once")
        else:
            _status("user admin has the password from stdin")
        return

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    if quiet:
        # uvicorn's "connection open/closed" lines are per websocket too.
        for name in ("uvicorn.error", "concordctl.server.access"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if not is_loopback(host):
        _status(exposure_warning(host, port, tls_cert is not None).removeprefix("warning: "))

    async def run() -> None:
        server = EmbeddedServer(config)
        try:
            await server.start()
        except StartError as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        except StoreError as exc:
            raise UsageError(str(exc)) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            if server.admin_password is not None and admin_password is not None:
                _status("created user admin with the password from stdin")
            elif server.admin_password is not None:
                _status(
                    f"created user admin with password: {server.admin_password}\n"
                    "concordctl: it is shown only this once; log in with "
                    f"`concordctl login --server {server.url} --username admin`"
                )
            elif admin_password is not None:
                _status("database already set up; admin password unchanged")
            node = server.node_id
            where = f"database: {shown_db}" + ("" if node is None else f", node {node}")
            # Last, so whoever waits for this line has seen the password too.
            _status(f"serving on {server.url} ({where})")
            await server.serve_until(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await server.stop()
            _status("server stopped")
        if server.failure is not None:
            _status(f"error: {server.failure}")
            raise typer.Exit(1)

    asyncio.run(run())
