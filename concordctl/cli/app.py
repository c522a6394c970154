"""The root Typer application: global options, error handling, exit codes.

Each command group lives in its own module and registers itself on ``app``;
a command imports what it needs inside its body, so start-up stays cheap
(``concordctl send`` never imports websockets, rich or the server).

:func:`run` turns every failure into one line on stderr and an exit code of
DESIGN.md: 2 usage, 3 not authenticated, 4 not found, 5 forbidden,
6 unreachable, 7 server error, 124 timed out, 130 interrupted, 1 anything
else. A traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
import typer.core

try:  # typer >= 0.29 vendors click; older ones use click itself
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException  # type: ignore[assignment,unused-ignore]

from concordctl import __version__
from concordctl.cli.failure import error_line as _error_line
from concordctl.cli.failure import scrub
from concordctl.errors import ConcordError

app = typer.Typer(
    name="concordctl",
    help=(
        "Command line for Concord chat servers: chat, tail, wait, run bots, serve.\n\n"
        "Example: concordctl login --server http://127.0.0.1:8080 --username alice"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

state = {"debug": False}


def _hide_argument_type_under_metavar() -> None:
    """Help shows ``CHANNEL``, not ``CHANNEL <str>``.

    Typer 0.29 prints an argument's type after its name even when the
    argument has a metavar (``TyperArgument.get_help_record`` always appends
    ``display_type_rich``), while an option with a metavar shows the metavar
    alone. Arguments get the options' rule: a metavar already says what to
    write, so the type placeholder is left for arguments without one (every
    argument of ours has one; tests/cli/test_commands.py holds that).
    """
    argument = getattr(typer.core, "TyperArgument", None)
    original = getattr(argument, "display_type_rich", None)
    if argument is None or original is None or getattr(original, "_concordctl", False):
        return  # another Typer: its help is what it is

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if self.metavar is not None else original(self, ctx)

    display_type_rich._concordctl = True  # type: ignore[attr-defined]
    setattr(argument, "display_type_rich", display_type_rich)  # noqa: B010


_hide_argument_type_under_metavar()


def debug_enabled() -> bool:
    """Whether ``--debug`` was given (anywhere on the command line)."""
    return state["debug"]


def _version(value: bool) -> None:
    if value:
        print(f"concordctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and debug logs on stderr.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    state["debug"] = debug
    if debug:
        import logging

        logging.basicConfig(
            level=logging.DEBUG, stream=sys.stderr, format="%(name)s: %(levelname)s: %(message)s"
        )


# The modules under concordctl/cli/ that add commands to ``app`` when imported.
COMMAND_MODULES: tuple[str, ...] = (
    "auth",
    "profiles",
    "chats",
    "directory",
    "tail",
    "wait",
    "botnew",
    "demo",
    "serve",
    "run",
)

# Which module defines a command, so that ``concordctl send`` imports (and
# Typer builds) only the commands of chats.py. A command missing here still
# works: its module is imported with all the others.
COMMAND_OWNERS: dict[str, str] = {
    **dict.fromkeys(("login", "logout", "whoami", "register", "passwd", "auth"), "auth"),
    "profiles": "profiles",
    **dict.fromkeys(("send", "edit", "delete", "react", "typing", "history", "search"), "chats"),
    **dict.fromkeys(("channels", "users"), "directory"),
    "tail": "tail",
    "wait": "wait",
    "bot": "botnew",
    "demo": "demo",
    "serve": "serve",
    "run": "run",
}

# The groups and their subcommands: a global flag written before the command
# moves behind the subcommand, where the subcommand declares it.
GROUPS: dict[str, frozenset[str]] = {
    "channels": frozenset(("list", "create", "edit", "delete")),
    "users": frozenset(("list", "promote")),
    "auth": frozenset(("status", "token")),
    "profiles": frozenset(("list", "use", "delete")),
    "bot": frozenset(("new",)),
}

# Flags accepted before or after the command name (DESIGN.md), and whether
# they take a value. ``--debug`` is the root's; the others belong to each
# command that talks to a server.
GLOBAL_VALUE_FLAGS = frozenset(
    ("--server", "-s", "--profile", "-p", "--timeout", "--jq", "--ca-cert")
)
GLOBAL_BOOL_FLAGS = frozenset(("--json", "--insecure"))

_imported: set[str] = set()


def _import_command_module(name: str) -> None:
    import importlib

    if name in _imported:
        return
    try:
        importlib.import_module(f"concordctl.cli.{name}")
    except ModuleNotFoundError as exc:
        # A command module another engineer has not landed yet must not
        # take the whole command line down with it.
        if exc.name != f"concordctl.cli.{name}":
            raise
    _imported.add(name)


def _command_name(argv: Sequence[str]) -> str | None:
    """The subcommand in ``argv``: the first word that is not a root option."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in GLOBAL_VALUE_FLAGS:
            skip = True
            continue
        if not arg.startswith("-"):
            return arg
        if arg in ("--help", "-h", "--version") or arg.endswith("-completion"):
            return None
    return None


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with the global flags where Click expects them.

    ``--debug`` anywhere (before a ``--``) becomes the root's option; the
    other global flags written before the command move behind it (behind the
    subcommand of a group), so ``concordctl -s URL send ...`` and
    ``concordctl send ... -s URL`` are the same command line.
    """
    args = list(argv)
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end]
    if debug:
        args = [a for i, a in enumerate(args) if not (a == "--debug" and i < end)]
    moved: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        flag = arg.split("=", 1)[0]
        if arg.startswith("-") and flag in GLOBAL_VALUE_FLAGS and "=" not in arg:
            moved += args[i : i + 2]
            i += 2
            continue
        if arg.startswith("-") and (flag in GLOBAL_VALUE_FLAGS or arg in GLOBAL_BOOL_FLAGS):
            moved.append(arg)
            i += 1
            continue
        rest = args[i:]
        break
    if moved and rest and not rest[0].startswith("-"):
        at = 1
        if rest[0] in GROUPS and len(rest) > 1 and rest[1] in GROUPS[rest[0]]:
            at = 2
        rest = rest[:at] + moved + rest[at:]
    elif moved:
        rest = moved + rest
    return (["--debug"] if debug else []) + rest


def _register_commands(argv: Sequence[str] | None = None) -> None:
    """Import the command modules: only the one needed for ``argv`` if known."""
    import os

    command = _command_name(argv) if argv is not None else None
    owner = COMMAND_OWNERS.get(command or "")
    completing = any(k.endswith("_COMPLETE") for k in os.environ)
    if owner in COMMAND_MODULES and not completing:
        _import_command_module(owner)
        return
    for name in COMMAND_MODULES:
        _import_command_module(name)


def _skip_httpx_cli() -> None:
    """Keep ``import httpx`` from importing httpx's own command line.

    httpx imports its CLI (``httpx._main``: click, pygments and rich, some
    60 ms) whenever those happen to be installed, and falls back to a stub
    when that import fails. concordctl never runs httpx's CLI, so in our own
    process we let it fail; rich is imported by us when we render.
    """
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); the exit code."""
    _skip_httpx_cli()
    from concordctl.cli.coercion import defer_typer_coercion

    defer_typer_coercion()
    args = normalize_argv(list(argv) if argv is not None else sys.argv[1:])
    if args[:1] == ["--show-completion"]:  # Typer's ignores the shell named after it
        from concordctl.cli.complete import script_for

        try:
            print(script_for(args[1] if len(args) > 1 else None))
        except ConcordError as exc:
            print(f"concordctl: {_error_line(exc)}", file=sys.stderr)
            return exc.exit_code
        return 0
    _register_commands(args)
    state["debug"] = False
    try:
        code = app(
            args=args,
            prog_name="concordctl",
            standalone_mode=False,
        )
    except ClickException as exc:  # usage errors: exit 2 with Click's message
        exc.show()
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("concordctl: interrupted", file=sys.stderr)
        return 130
    except ConcordError as exc:
        if state["debug"]:
            import traceback

            traceback.print_exc()
        print(f"concordctl: {_error_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (`concordctl history | head`): it has what it
        # wanted, as with any Unix filter. Nothing left to say.
        _silence_stdout()
        return 0
    except Exception as exc:
        if state["debug"]:
            raise
        print(
            f"concordctl: unexpected error: {type(exc).__name__}: {scrub(str(exc))} "
            "(run with --debug for a traceback)",
            file=sys.stderr,
        )
        return 1
    return code if isinstance(code, int) else 0


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main() -> None:
    sys.exit(run())
