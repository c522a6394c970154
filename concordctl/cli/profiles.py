"""``concordctl profiles``: the saved logins of the config file (list, use, delete)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from concordctl.cli.app import app
from concordctl.cli.complete import complete_profile
from concordctl.cli.diagnose import no_such_profile
from concordctl.cli.options import JqOption, JsonOption, note

profiles_app = typer.Typer(
    name="profiles",
    help="The saved logins: list them (no subcommand), choose the default, delete one.",
)
app.add_typer(profiles_app)

ProfileArg = Annotated[
    str, typer.Argument(help="Profile name.", metavar="NAME", autocompletion=complete_profile)
]


def _table() -> tuple[str | None, dict[str, Any]]:
    from concordctl.config import load_config

    data = load_config()
    profiles = data.get("profiles", {})
    default = data.get("default_profile")
    return (str(default) if default else None), (profiles if isinstance(profiles, dict) else {})


def _list(json: bool, jq: str | None) -> None:
    from concordctl.cli.sanitize import one_line

    default, profiles = _table()
    rows = [
        {
            "name": name,
            "default": name == default,
            "server": prof.get("server"),
            "username": prof.get("username"),
            "loggedIn": bool(prof.get("token") or prof.get("password")),
            "passwordSaved": bool(prof.get("password")),
        }
        for name, prof in sorted(profiles.items())
        if isinstance(prof, dict)
    ]
    if json or jq is not None:
        from concordctl.cli.output import print_json

        print_json(rows, jq=jq)
        return
    if not rows:
        note("concordctl: no profiles yet; run `concordctl login`")
        return
    for row in rows:
        mark = "*" if row["default"] else " "
        state = "" if row["loggedIn"] else "  (logged out)"
        who = f"{row['username'] or '?'} on {row['server'] or '?'}"
        print(f"{mark} {one_line(str(row['name']))}  {one_line(who)}{state}")


@profiles_app.callback(invoke_without_command=True)
def profiles_root(ctx: typer.Context, json: JsonOption = False, jq: JqOption = None) -> None:
    """List the profiles; the default one is marked with *.

    \b
    Examples:
      concordctl profiles
      concordctl profiles use work
      concordctl profiles --json --jq '.[] | select(.default).name'
    """
    if ctx.invoked_subcommand is None:
        _list(json, jq)


@profiles_app.command("list")
def profiles_list(json: JsonOption = False, jq: JqOption = None) -> None:
    """List the profiles; the default one is marked with *."""
    _list(json, jq)


@profiles_app.command("use")
def profiles_use(name: ProfileArg) -> None:
    """Make NAME the default profile (used when --profile and CONCORD_PROFILE are not given)."""
    from concordctl.config import save_profile

    _, profiles = _table()
    if name not in profiles:
        raise no_such_profile(name)
    save_profile(name, make_default=True)
    note(f"profile {name!r} is now the default")


@profiles_app.command("delete")
def profiles_delete(name: ProfileArg) -> None:
    """Delete profile NAME (its server, user name and token) from the config file.

    This does not sign out on the server: run `concordctl logout --profile NAME` first for that.
    """
    from concordctl.config import delete_profile

    if not delete_profile(name):
        raise no_such_profile(name)
    note(f"deleted profile {name!r}")
