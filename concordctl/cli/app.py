"""The root Typer application: global options, error handling, exit codes.

Each command group lives in its own module and registers itself on ``app``;
a command imports what it needs inside its body, so start-up stays cheap.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import click
import typer

from concordctl import __version__
from concordctl.errors import ConcordError

app = typer.Typer(
    name="concordctl",
    help="Command line for Concord chat servers: chat, tail, wait, run bots, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        print(f"concordctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    _state["debug"] = debug


# The modules under concordctl/cli/ that add commands to ``app`` when imported.
COMMAND_MODULES: tuple[str, ...] = ()


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"concordctl.cli.{name}")


def main() -> None:
    _register_commands()
    try:
        code = app(standalone_mode=False)
    except click.ClickException as exc:  # usage errors: exit 2 with Click's message
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print("concordctl: interrupted", file=sys.stderr)
        sys.exit(130)
    except ConcordError as exc:
        if _state["debug"]:
            raise
        print(f"concordctl: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("concordctl: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
