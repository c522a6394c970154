"""Commands about who you are: login, logout, whoami, register, passwd, auth status/token."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from concordctl.cli.app import app
from concordctl.cli.options import Connection, note, server_command
from concordctl.cli.sanitize import one_line

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.client import Client

PasswordStdinOption = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of stdin (else CONCORD_PASSWORD, "
        "else a prompt on a terminal). A password is never a flag.",
    ),
]
UsernameOption = Annotated[
    str | None,
    typer.Option(
        "--username",
        "-u",
        metavar="NAME",
        help="User name. [env: CONCORD_USERNAME]",
        show_default=False,
    ),
]

auth_app = typer.Typer(
    name="auth",
    help="Your credentials: `auth status` shows them, `auth token` prints the token for CI.",
    no_args_is_help=True,
)
app.add_typer(auth_app)


@server_command(app)
def login(
    username: UsernameOption = None,
    password_stdin: PasswordStdinOption = False,
    save_password: Annotated[
        bool,
        typer.Option(
            "--save-password",
            help="Also keep the password in the profile (the 0600 config file), so that "
            "a command finding the token expired or gone logs in again by itself.",
        ),
    ] = False,
    *,
    conn: Connection,
) -> None:
    """Log in and keep the server, user name and token in a profile.

    The password is read from stdin (--password-stdin), CONCORD_PASSWORD, or a
    prompt; only the token is stored in the profile, a 0600 file
    (CONCORD_CONFIG overrides its path), not the password unless
    --save-password is given. --ca-cert and --insecure are saved in the
    profile too, so later commands use them.

    \b
    Examples:
      concordctl login --server http://127.0.0.1:8080 --username alice
      printf '%s\\n' "$PW" | concordctl login -s http://127.0.0.1:8080 -u ci --password-stdin
      concordctl login -s https://chat.example.com -u bot --ca-cert ca.pem --save-password
    """
    from concordctl.cli.args import prompt_value, read_password
    from concordctl.config import resolve_settings, save_profile
    from concordctl.errors import UsageError

    settings = resolve_settings(conn.server, username=username, profile=conn.profile)
    server_url = settings.server or prompt_value("Server URL")
    if not server_url:
        raise UsageError("no server to log in to", hint="pass --server URL or set CONCORD_SERVER")
    user = settings.username or prompt_value("Username")
    if not user:
        raise UsageError("no user name", hint="pass --username NAME or set CONCORD_USERNAME")
    password = read_password(password_stdin)
    conn.server = server_url

    async def body() -> tuple[str, str, str]:
        async with conn.client(username=user, password=password, one_shot=True) as c:
            token = await c.login()
            return c.settings.base_url, c.settings.profile, token

    base_url, profile_name, token = conn.run_coro(body())
    # Without the flag a password saved by an earlier login is removed (None):
    # the file holds one only while the user keeps asking for it.
    tls: dict[str, Any] = {}
    if conn.ca_cert is not None:
        tls["ca_cert"] = str(conn.ca_cert.resolve())
    if conn.insecure:
        tls["insecure"] = True
    elif base_url.startswith("http://") or conn.ca_cert is not None:
        tls["insecure"] = None
    path = save_profile(
        profile_name,
        server=base_url,
        username=user,
        token=token,
        password=password if save_password else None,
        **tls,
    )
    saved = "; the password is saved too" if save_password else ""
    note(
        f"logged in to {base_url} as {one_line(user)} "
        f"(profile {profile_name!r}, saved in {path}{saved})"
    )


@server_command(app)
def logout(*, conn: Connection) -> None:
    """Sign out: the server drops your sessions, the profile forgets the token.

    Where the server supports it (DELETE /api/tokens) every token of yours
    stops working and your open connections close; then the token (and a
    saved password) is removed from the profile. The server and user name
    stay, so the next login only asks for the password.

    \b
    Example:
      concordctl logout --profile work
    """
    from concordctl.config import load_profile, resolve_settings, save_profile
    from concordctl.errors import ConcordError, NotAuthenticated

    name = resolve_settings(profile=conn.profile).profile
    stored = load_profile(name)
    if not stored.get("token") and not stored.get("password"):
        note(f"concordctl: profile {name!r} was not logged in")
        return

    async def revoke(c: Client) -> bool:
        return await c.revoke_tokens()

    server_side = "the server could not be asked to drop your sessions"
    try:
        if stored.get("server"):
            conn.server = conn.server or str(stored["server"])
            dropped = conn.run(revoke)
            server_side = (
                "your sessions on the server are closed"
                if dropped
                else "this server cannot drop sessions: the old token works until it expires"
            )
    except NotAuthenticated:
        server_side = "the token had already stopped working"
    except ConcordError as exc:
        note(f"concordctl: warning: {one_line(exc.message)}")
    save_profile(name, token=None, password=None)
    removed = "token and saved password" if stored.get("password") else "token"
    note(f"logged out ({removed} removed from profile {name!r}; {server_side})")


@server_command(app, json=True)
def whoami(*, conn: Connection) -> None:
    """Show the user the current credentials belong to.

    \b
    Examples:
      concordctl whoami
      CONCORD_SERVER=http://127.0.0.1:8080 CONCORD_TOKEN=... concordctl whoami --json
    """

    async def body(c: Client) -> None:
        me = await c.me()
        nick = f" ({me.profile.nickname})" if me.profile.nickname != me.username else ""
        conn.emit(
            me, lambda: print(f"{one_line(me.username + nick)} [{me.id}] on {c.settings.base_url}")
        )

    conn.run(body)


@server_command(app, json=True)
def register(
    username: Annotated[
        str, typer.Option("--username", "-u", metavar="NAME", help="The new user's name.")
    ],
    password_stdin: PasswordStdinOption = False,
    *,
    conn: Connection,
) -> None:
    """Create a user account on the server (then run `concordctl login`).

    \b
    Example:
      printf '%s\\n' "$PW" | concordctl register --username bob --password-stdin
    """
    from concordctl.cli.args import read_password

    password = read_password(password_stdin, confirm=True)

    async def body(c: Client) -> None:
        user = await c.register(username, password)
        conn.emit(user, lambda: print(f"registered {one_line(user.username)} [{user.id}]"))

    conn.run(body)


@server_command(app)
def passwd(password_stdin: PasswordStdinOption = False, *, conn: Connection) -> None:
    """Change your password; the profile gets a fresh token.

    The new password comes from the first line of stdin (--password-stdin)
    or a prompt (asked twice); never from a flag. Where the server closes
    other sessions on a password change, they end here.

    \b
    Example:
      printf '%s\\n' "$NEW" | concordctl passwd --password-stdin
    """
    from concordctl.cli.args import read_new_password
    from concordctl.config import load_profile, save_profile

    new = read_new_password(password_stdin)

    async def body(c: Client) -> tuple[str, str, str]:
        me = await c.me()
        await c.change_password(new)
        from concordctl.client import Client as Fresh

        async with Fresh(
            c.settings.base_url,
            username=me.username,
            password=new,
            ca_cert=c.settings.ca_cert,
            insecure=c.settings.insecure,
        ) as again:
            token = await again.login()
        return c.settings.profile, me.username, token

    profile_name, user, token = conn.run(body)
    stored = load_profile(profile_name)
    if stored.get("username") == user and stored.get("token"):
        save_profile(
            profile_name,
            token=token,
            password=new if stored.get("password") else None,
        )
        note(f"password changed for {one_line(user)}; profile {profile_name!r} has a new token")
    else:
        note(f"password changed for {one_line(user)}")


@server_command(auth_app, "status", json=True, label="auth status")
def auth_status(*, conn: Connection) -> None:
    """Show the profile, server, user and token expiry; exit 3 when not logged in.

    \b
    Examples:
      concordctl auth status
      concordctl auth status --json --jq .expiresAt
    """
    from concordctl.cli.session import status_of

    status = status_of(conn)

    def human() -> None:
        for key, label in (
            ("profile", "profile"),
            ("server", "server"),
            ("username", "user"),
            ("expires", "token"),
            ("passwordSaved", "password saved"),
            ("source", "credentials from"),
        ):
            value = status.get(key)
            if isinstance(value, bool):
                value = "yes" if value else "no"
            print(f"{label + ':':<17} {one_line(str(value)) if value is not None else '-'}")

    conn.emit(status, human)
    if not status.get("loggedIn"):
        from concordctl.errors import NotAuthenticated

        raise NotAuthenticated(
            f"not logged in{status.get('why', '')}",
            hint="run `concordctl login` or set CONCORD_TOKEN",
        )


@server_command(auth_app, "token", label="auth token")
def auth_token(*, conn: Connection) -> None:
    """Print the token of the current credentials (to store as a CI secret).

    Logs in first when only a user name and password are configured.

    \b
    Example:
      concordctl auth token | gh secret set CONCORD_TOKEN
    """

    async def body(c: Client) -> str:
        await c.me()  # proves the token works (and logs in with a password)
        token = c.token
        assert token is not None
        return token

    token = conn.run(body)
    if sys.stdout.isatty():
        note("concordctl: this is a secret; do not paste it anywhere public")
    print(token)
