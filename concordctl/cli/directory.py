"""Commands that list what is on the server: channels and users."""

from __future__ import annotations

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


@app.command()
def channels(
    server: ServerOption = None,
    profile: ProfileOption = None,
    ca_cert: CaCertOption = None,
    insecure: InsecureOption = False,
    json: JsonOption = False,
) -> None:
    """List the channels as a tree (with --json: the server's nested array).

    \b
    Examples:
      concordctl channels
      concordctl channels --json | jq -r '.[].name'
    """

    async def body() -> None:
        async with client_from_options(server, profile, ca_cert, insecure) as c:
            tree = await c.channels()
            from concordctl.cli import render

            if json:
                render.print_json(tree)
            else:
                render.print_channels(tree, title=f"channels on {c.settings.base_url}")

    run_async(body())


@app.command()
def users(
    server: ServerOption = None,
    profile: ProfileOption = None,
    ca_cert: CaCertOption = None,
    insecure: InsecureOption = False,
    json: JsonOption = False,
) -> None:
    """List the users with their online status (with --json: the server's array).

    \b
    Examples:
      concordctl users
      concordctl users --json | jq -r '.[] | select(.status.onlineStatus == "ONLINE").username'
    """

    async def body() -> None:
        async with client_from_options(server, profile, ca_cert, insecure) as c:
            people = await c.users()
        from concordctl.cli import render

        if json:
            render.print_json(people)
        else:
            render.print_users(people)

    run_async(body())
