"""Commands about who you are: login, logout, whoami, register."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from concordctl.cli.app import app
from concordctl.cli.options import (
    CaCertOption,
    InsecureOption,
    JsonOption,
    ProfileOption,
    ServerOption,
    client_from_options,
    run_async,
)

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
    typer.Option("--username", "-u", help="User name. [env: CONCORD_USERNAME]", show_default=False),
]


@app.command()
def login(
    server: ServerOption = None,
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
    profile: ProfileOption = None,
    ca_cert: CaCertOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Log in and keep the server, user name and token in a profile.

    The password is read from stdin (--password-stdin), CONCORD_PASSWORD, or a
    prompt; only the token is stored in the profile, a 0600 file
    (CONCORD_CONFIG overrides its path), not the password unless
    --save-password is given. A login without it removes a saved password.

    \b
    Examples:
      concordctl login --server http://127.0.0.1:8080 --username alice
      printf '%s\\n' "$PW" | concordctl login -s http://127.0.0.1:8080 -u ci --password-stdin
      concordctl login -s http://127.0.0.1:8080 -u bot --save-password
    """
    from concordctl.cli.args import prompt_value, read_password
    from concordctl.config import resolve_settings, save_profile
    from concordctl.errors import UsageError

    settings = resolve_settings(server, username=username, profile=profile)
    server_url = settings.server or prompt_value("Server URL")
    if not server_url:
        raise UsageError("no server to log in to", hint="pass --server URL or set CONCORD_SERVER")
    user = settings.username or prompt_value("Username")
    if not user:
        raise UsageError("no user name", hint="pass --username NAME or set CONCORD_USERNAME")
    password = read_password(password_stdin)

    async def body() -> tuple[str, str, str]:
        async with client_from_options(
            server_url, profile, ca_cert, insecure, username=user, password=password
        ) as c:
            token = await c.login()
            return c.settings.base_url, c.settings.profile, token

    base_url, profile_name, token = run_async(body())
    # Without the flag a password saved by an earlier login is removed (None):
    # the file holds one only while the user keeps asking for it.
    path = save_profile(
        profile_name,
        server=base_url,
        username=user,
        token=token,
        password=password if save_password else None,
    )
    saved = "; the password is saved too" if save_password else ""
    print(
        f"logged in to {base_url} as {user} (profile {profile_name!r}, saved in {path}{saved})",
        file=sys.stderr,
    )


@app.command()
def logout(profile: ProfileOption = None) -> None:
    """Forget the token (and a saved password) of a profile.

    The server and user name stay, so the next login only asks for the password.

    \b
    Example:
      concordctl logout --profile work
    """
    from concordctl.config import load_profile, resolve_settings, save_profile

    name = resolve_settings(profile=profile).profile
    stored = load_profile(name)
    if not stored.get("token") and not stored.get("password"):
        print(f"concordctl: profile {name!r} was not logged in", file=sys.stderr)
        return
    save_profile(name, token=None, password=None)
    removed = "token and saved password" if stored.get("password") else "token"
    print(f"logged out ({removed} removed from profile {name!r})", file=sys.stderr)


@app.command()
def whoami(
    server: ServerOption = None,
    profile: ProfileOption = None,
    ca_cert: CaCertOption = None,
    insecure: InsecureOption = False,
    json: JsonOption = False,
) -> None:
    """Show the user the current credentials belong to.

    \b
    Examples:
      concordctl whoami
      CONCORD_SERVER=http://127.0.0.1:8080 CONCORD_TOKEN=... concordctl whoami --json
    """

    async def body() -> None:
        async with client_from_options(server, profile, ca_cert, insecure) as c:
            me = await c.me()
            if json:
                from concordctl.cli.render import print_json

                print_json(me)
            else:
                nick = f" ({me.profile.nickname})" if me.profile.nickname != me.username else ""
                print(f"{me.username}{nick} [{me.id}] on {c.settings.base_url}")

    run_async(body())


@app.command()
def register(
    username: Annotated[str, typer.Option("--username", "-u", help="The new user's name.")],
    password_stdin: PasswordStdinOption = False,
    server: ServerOption = None,
    profile: ProfileOption = None,
    ca_cert: CaCertOption = None,
    insecure: InsecureOption = False,
    json: JsonOption = False,
) -> None:
    """Create a user account on the server (then run `concordctl login`).

    \b
    Example:
      printf '%s\\n' "$PW" | concordctl register --username bob --password-stdin
    """
    from concordctl.cli.args import read_password

    password = read_password(password_stdin, confirm=True)

    async def body() -> None:
        async with client_from_options(server, profile, ca_cert, insecure) as c:
            user = await c.register(username, password)
        if json:
            from concordctl.cli.render import print_json

            print_json(user)
        else:
            print(f"registered {user.username} [{user.id}]")

    run_async(body())
