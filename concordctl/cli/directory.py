"""What is on the server: ``channels`` (list, create, edit, delete), ``users`` (list, promote)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from concordctl.cli.app import app
from concordctl.cli.complete import complete_channel, complete_user
from concordctl.cli.options import Connection, note, server_command
from concordctl.cli.sanitize import one_line

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.client import Client

channels_app = typer.Typer(name="channels")
users_app = typer.Typer(name="users")
app.add_typer(channels_app)
app.add_typer(users_app)

ChannelArg = Annotated[
    str,
    typer.Argument(
        help="Channel id or name (with or without #).",
        metavar="CHANNEL",
        autocompletion=complete_channel,
    ),
]


def _list_channels(conn: Connection) -> None:
    async def body(c: Client) -> None:
        tree = await c.channels()

        def human() -> None:
            from concordctl.cli.output import print_channels

            print_channels(tree, title=f"channels on {c.settings.base_url}")

        conn.emit(tree, human)

    conn.run(body)


@server_command(channels_app, "list", json=True, label="channels")
def channels_list(*, conn: Connection) -> None:
    """List the channels as a tree (with --json: the server's nested array).

    \b
    Examples:
      concordctl channels
      concordctl channels --json --jq '.[].name'
    """
    _list_channels(conn)


@server_command(channels_app, "create", json=True, label="channels create")
def channels_create(
    name: Annotated[
        str, typer.Argument(help="The new channel's name (a leading # is dropped).", metavar="NAME")
    ],
    parent: Annotated[
        str | None,
        typer.Option(
            "--parent",
            metavar="CHANNEL",
            help="Make it a child of this channel.",
            autocompletion=complete_channel,
        ),
    ] = None,
    description: Annotated[
        str | None, typer.Option("--description", metavar="TEXT", help="What it is for.")
    ] = None,
    *,
    conn: Connection,
) -> None:
    """Create a channel (an admin's, unless the server runs with --open-channels).

    Prints the new channel's id (the channel with --json).

    \b
    Examples:
      concordctl channels create releases --description "release notes"
      concordctl channels create nightly --parent releases
    """
    from concordctl.errors import UsageError

    clean = name.strip().lstrip("#")
    if not clean:
        raise UsageError("channels create: the name is empty")

    async def body(c: Client) -> None:
        parent_id = await c.channel_id(parent) if parent is not None else None
        channel = await c.create_channel(clean, description, parent_id)
        conn.emit(channel, lambda: print(channel.id))
        if not conn.wants_json:
            note(f"created #{one_line(channel.name)} [{channel.id}]")

    conn.run(body)


@server_command(channels_app, "edit", json=True, label="channels edit")
def channels_edit(
    channel: ChannelArg,
    new_name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="Rename it.", show_default=False)
    ] = None,
    description: Annotated[
        str | None,
        typer.Option("--description", metavar="TEXT", help="New description.", show_default=False),
    ] = None,
    *,
    conn: Connection,
) -> None:
    """Rename a channel or change its description (an admin's).

    \b
    Example:
      concordctl channels edit releases --name shipped --description "what went out"
    """
    from concordctl.errors import UsageError

    if new_name is None and description is None:
        raise UsageError("channels edit: nothing to change", hint="give --name or --description")

    async def body(c: Client) -> None:
        updated = await c.edit_channel(channel, name=new_name, description=description)
        conn.emit(updated, lambda: note(f"edited #{one_line(updated.name)} [{updated.id}]"))

    conn.run(body)


@server_command(channels_app, "delete", label="channels delete")
def channels_delete(
    channel: ChannelArg,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask (needed when stdin is not a terminal).")
    ] = False,
    *,
    conn: Connection,
) -> None:
    """Delete a channel and every chat in it (an admin's). Asks first on a terminal.

    \b
    Example:
      concordctl channels delete old-builds --yes
    """
    from concordctl.errors import UsageError

    async def resolve(c: Client) -> tuple[int, str]:
        found = await c.channel(channel)
        return found.id, found.name

    cid, name = conn.run(resolve)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"channels delete: refusing to delete #{one_line(name)} without --yes",
                hint="stdin is not a terminal to ask on; add --yes",
            )
        answer = input(f"Delete #{one_line(name)} [{cid}] and all its chats? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            note("concordctl: nothing deleted")
            raise typer.Exit(1)

    async def delete(c: Client) -> None:
        await c.delete_channel(cid)

    conn.run(delete)
    note(f"deleted #{one_line(name)} [{cid}]")


@server_command(channels_app, json=True, callback=True, label="channels")
def channels_root(ctx: typer.Context, *, conn: Connection) -> None:
    """List the channels as a tree (no subcommand), or create, edit and delete them.

    \b
    Examples:
      concordctl channels
      concordctl channels --json --jq '.[].name'
      concordctl channels create releases
    """
    if ctx.invoked_subcommand is None:
        _list_channels(conn)


@server_command(users_app, json=True, callback=True, label="users")
def users_root(ctx: typer.Context, *, conn: Connection) -> None:
    """List the users with their online status (no subcommand), or promote one.

    \b
    Examples:
      concordctl users
      concordctl users --jq '.[] | select(.status.onlineStatus == "ONLINE").username'
      concordctl users promote alice
    """
    if ctx.invoked_subcommand is None:
        _list_users(conn)


@server_command(users_app, "list", json=True, label="users")
def users_list(*, conn: Connection) -> None:
    """List the users with their online status (with --json: the server's array)."""
    _list_users(conn)


def _list_users(conn: Connection) -> None:
    async def body(c: Client) -> None:
        people = await c.users()

        def human() -> None:
            from concordctl.cli.output import print_users

            print_users(people)

        conn.emit(people, human)

    conn.run(body)


@server_command(users_app, "promote", json=True, label="users promote")
def users_promote(
    user: Annotated[
        str,
        typer.Argument(help="User name or id.", metavar="USER", autocompletion=complete_user),
    ],
    *,
    conn: Connection,
) -> None:
    """Make a user an admin (an admin's): they may then manage channels and promote others.

    \b
    Example:
      concordctl users promote alice
    """

    async def body(c: Client) -> None:
        promoted = await c.promote_user(user)
        conn.emit(
            promoted, lambda: note(f"{one_line(promoted.username)} [{promoted.id}] is an admin")
        )

    conn.run(body)
