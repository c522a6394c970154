"""``concordctl run``: load a bot from a file or module and run it.

TARGET is ``path/to/bot.py`` (the one :class:`~concordctl.Bot` in it, or
``--attr NAME``) or ``package.module:attribute``. Connection settings are the
shared flags, environment and profile of every command. ``--reload`` swaps in
edited handlers without dropping the connection; ``--replay`` feeds a recording
(``concordctl tail --json``) or a dead-letter file through the handlers, and
``--dry-run`` prints each write instead of making it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.machinery
import importlib.util
import itertools
import logging
import sys
import traceback
from pathlib import Path
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from concordctl.cli.app import app, debug_enabled
from concordctl.cli.options import Connection, server_command
from concordctl.errors import ConcordError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.bot import Bot

log = logging.getLogger("concordctl.run")
_module_numbers = itertools.count(1)


class BotLoadError(ConcordError):
    """The bot's file or module could not be imported (exit 1)."""


def _where(exc: BaseException, path: Path | None) -> str:
    """``bot.py:12`` for the deepest frame in the user's file, or ''."""
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        return f"{Path(exc.filename or '?').name}:{exc.lineno}"
    frames = list(traceback.extract_tb(exc.__traceback__))
    if path is not None:
        frames = [f for f in frames if Path(f.filename).resolve() == path.resolve()] or frames
    if not frames:
        return ""
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.lineno}"


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles the file every time, bypassing ``__pycache__``.

    A cached ``.pyc`` is trusted when the source's size and mtime in whole
    seconds match, so an edit of the same length within the same second (an
    editor saving twice, a one-character fix) would reload the old code.
    """

    def get_code(self, fullname: str) -> CodeType:
        return compile(self.get_data(self.path), self.path, "exec", dont_inherit=True)


def _import_file(path: Path) -> ModuleType:
    # A fresh module object each time, so a reload never mixes old and new code.
    name = f"concordctl_bot_{path.stem}_{next(_module_numbers)}"
    loader = _SourceOnlyLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None or spec.loader is None:
        raise BotLoadError(f"cannot load {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _forget_bytecode(module: ModuleType) -> None:
    """Delete ``module``'s cached ``.pyc`` before a reload (see :class:`_SourceOnlyLoader`)."""
    source = getattr(module, "__file__", None)
    if source and source.endswith(".py"):
        with contextlib.suppress(OSError, ValueError):
            Path(importlib.util.cache_from_source(source)).unlink(missing_ok=True)


def load_bot(target: str, attr: str | None = None, *, reload: bool = False) -> tuple[Bot, Path]:
    """The Bot named by TARGET, and the file to watch for --reload.

    Import errors become one-line :class:`BotLoadError` s naming the file and
    line; the original exception is chained for ``--debug``.
    """
    from concordctl.bot import Bot, _loading

    path: Path | None = None
    module_name: str | None = None
    if target.endswith(".py") or Path(target).is_file():
        path = Path(target)
        if not path.is_file():
            raise UsageError(
                f"no such bot file: {target}", hint="give path/to/bot.py or module:attr"
            )
        path = path.resolve()
    else:
        module_name, _, colon_attr = target.partition(":")
        attr = attr or colon_attr or None
        if not module_name:
            raise UsageError(
                f"invalid TARGET {target!r}", hint="give path/to/bot.py or module:attr"
            )

    token = _loading.set(True)  # a module-level bot.run() must not start a second bot
    try:
        if path is not None:
            directory = str(path.parent)
            if directory not in sys.path:
                sys.path.insert(0, directory)  # so the bot can import its neighbours
            module = _import_file(path)
        else:
            assert module_name is not None
            module = importlib.import_module(module_name)
            if reload:
                _forget_bytecode(module)
                module = importlib.reload(module)
            path = Path(module.__file__ or module_name).resolve()
    except ConcordError:
        raise
    except ModuleNotFoundError as exc:
        if module_name is not None and exc.name == module_name.split(".")[0]:
            raise UsageError(
                f"no module named {module_name!r}",
                hint="give path/to/bot.py, or run from the directory that holds the package",
            ) from exc
        where = _where(exc, path)
        raise BotLoadError(f"cannot load {target}: {where + ': ' if where else ''}{exc}") from exc
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        where = _where(exc, path)
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, SyntaxError):
            detail = f"SyntaxError: {exc.msg}"
        raise BotLoadError(
            f"cannot load {target}: {where + ': ' if where else ''}{detail}",
            hint="fix the file; --debug shows the traceback",
        ) from exc
    finally:
        _loading.reset(token)

    if attr:
        value = getattr(module, attr, None)
        if value is None:
            raise UsageError(f"{target} has no attribute {attr!r}")
        if not isinstance(value, Bot) and callable(value):
            value = value()  # a factory function
        if not isinstance(value, Bot):
            raise UsageError(f"{target}:{attr} is a {type(value).__name__}, not a concordctl.Bot")
        return value, path
    bots: dict[int, tuple[str, Bot]] = {}
    for name, value in vars(module).items():
        if isinstance(value, Bot):
            bots.setdefault(id(value), (name, value))
    if not bots:
        raise UsageError(
            f"no Bot in {target}",
            hint="define one at module level (bot = Bot()) or name it with --attr",
        )
    if len(bots) > 1:
        names = ", ".join(sorted(n for n, _ in bots.values()))
        raise UsageError(f"{len(bots)} bots in {target} ({names})", hint="choose one with --attr")
    return next(iter(bots.values()))[1], path


def _print_write(action: str, details: dict[str, Any]) -> None:
    """How --dry-run shows a write the bot would have made."""
    if action == "send":
        where = f"channel {details.get('channel')}"
        if details.get("thread_id") is not None:
            where += f" thread {details['thread_id']}"
        text = f"send to {where}: {details.get('content')}"
    elif action in ("react", "unreact"):
        text = f"{action} {details.get('reaction')} on chat {details.get('chat_id')}"
    elif action == "edit":
        text = f"edit chat {details.get('chat_id')}: {details.get('content')}"
    elif action == "delete":
        text = f"delete chat {details.get('chat_id')}"
    else:
        text = f"{action} {details}"
    print(f"dry-run: {text}", flush=True)


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


_LOG_LEVELS = ("debug", "info", "warning", "error")


def _setup_logging(level: str | None = None, log_format: str = "text") -> None:
    if level is not None and level.lower() not in _LOG_LEVELS:
        raise UsageError(
            f"--log-level: {level!r} is not a level", hint="use " + ", ".join(_LOG_LEVELS)
        )
    if log_format not in ("text", "json"):
        raise UsageError(f"--log-format: {log_format!r} is not a format", hint="use text or json")
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(
            JsonLogFormatter()
            if log_format == "json"
            else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    chosen = level.upper() if level else ("DEBUG" if debug_enabled() else "INFO")
    root.setLevel(chosen)
    # Request lines would be noise at INFO (and a URL may carry a token).
    for noisy in ("httpx", "httpcore", "websockets", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _reloader(bot: Bot, target: str, attr: str | None, path: Path) -> None:
    """Swap in the edited bot each time its file changes; keep the old one on errors."""
    from watchfiles import awatch

    current = bot

    def only_the_bot_file(_change: Any, changed: str) -> bool:
        return Path(changed).name == path.name

    # The directory, not the file: editors save by renaming over the old file.
    async for _changes in awatch(path.parent, watch_filter=only_the_bot_file, debounce=200):
        try:
            new, _ = load_bot(target, attr, reload=True)
            await current.swap(new)
        except ConcordError as exc:
            log.error("reload failed: %s; the running handlers stay", exc)
            continue
        current = new
        log.info("reloaded %s: new handlers are live (connection kept)", path.name)


async def _wait_for_loadable(
    target: str, attr: str | None, error: ConcordError, directory: Path
) -> Bot:
    """--reload with a broken file at start: show the error, wait for a fix."""
    from watchfiles import awatch

    log.error("%s; waiting for the file to change (--reload)", error)
    async for _changes in awatch(directory, debounce=200):
        try:
            bot, _ = load_bot(target, attr, reload=True)
        except ConcordError as exc:
            log.error("%s; still waiting", exc)
            continue
        return bot
    raise error  # the watcher ended (stop signal)


class ReplayFailed(ConcordError):
    """A replay in which a handler failed or nothing could be read (exit 1)."""


class _ErrorCounter(logging.Handler):
    """Counts the errors the bot logs (a handler that raised, a timeout)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


async def _announce(c: Any, bot: Bot, path: Path) -> None:
    """The one line at start: who the bot is, where, and what it answers."""
    try:
        me = await c.me()
        who = me.username
    except (ConcordError, RuntimeError):  # the bot reports its own failure to connect
        return
    names = sorted(bot.commands)
    shown = ", ".join(f"{getattr(bot, 'prefix', '')}{n}" for n in names[:12])
    more = ", ..." if len(names) > 12 else ""
    _always_log(
        "running %s as %s on %s: %s",
        path.name,
        who,
        c.settings.base_url,
        _plural(len(names), "command") + (f" ({shown}{more})" if names else ""),
    )


def _always_log(message: str, *args: object) -> None:
    """An INFO record of ``concordctl.run`` written whatever ``--log-level`` says.

    ``run`` promises one line at start (issue 13), and ``--log-level warning``
    is for quieting the chatter after it, not the line that says the bot is
    up. It goes through the log handlers, not print(): with ``--log-format
    json`` it is one JSON object like every other stderr line (``"level":
    "info"``), so a log collector still parses every line.
    """
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, message, args, None)
    log.handle(record)  # handle(): past the level check of info(), not the filters


@server_command(app, "run", timeout=False)
def run_command(
    target: Annotated[
        str,
        typer.Argument(
            help="path/to/bot.py, or package.module:attribute", show_default=False, metavar="TARGET"
        ),
    ],
    attr: Annotated[
        str | None,
        typer.Option(
            "--attr", metavar="NAME", help="Name of the Bot in the file (when it holds several)."
        ),
    ] = None,
    reload: Annotated[
        bool, typer.Option("--reload", help="Swap in edited handlers when the file changes.")
    ] = False,
    replay: Annotated[
        Path | None,
        typer.Option(
            "--replay",
            metavar="FILE",
            help="Feed this NDJSON recording (concordctl tail --json, or a dead-letter file) "
            "through the handlers, then exit.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="With --replay: print every send, edit, delete and reaction instead of "
            "making it (reads still use the server when one is configured).",
        ),
    ] = False,
    health_file: Annotated[
        Path | None,
        typer.Option(
            "--health-file", metavar="FILE", help="Touch this file every second while healthy."
        ),
    ] = None,
    dead_letters: Annotated[
        Path | None,
        typer.Option(
            "--dead-letters",
            metavar="FILE",
            help="Append events whose handler failed to this NDJSON file.",
        ),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            metavar="PATH|URL",
            help="Keep the bot's store and stream cursor here (a SQLite file or a "
            "postgresql:// URL), so a restarted bot answers what it missed; processes on "
            "one PostgreSQL state are replicas that answer each command once.",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level", metavar="LEVEL", help="debug, info (default), warning or error."
        ),
    ] = None,
    log_format: Annotated[
        str,
        typer.Option("--log-format", metavar="FORMAT", help="text, or json: one object a line."),
    ] = "text",
    *,
    conn: Connection,
) -> None:
    """Run a bot until Ctrl-C or SIGTERM (exit 0 after a clean stop).

    Prints one line at start on stderr: the bot's user, the server and the
    commands loaded; always, whatever --log-level (with --log-format json it
    is a JSON log record at level info, like the other lines). With --replay,
    exits 1 when a handler failed or no line of the file could be read.

    \b
    Examples:
      concordctl run examples/echo_bot.py --health-file /tmp/bot.alive
      concordctl run bot.py --log-level warning --log-format json
      concordctl run bot.py --replay recorded.ndjson --dry-run
    """
    from concordctl.bot import run_with_signals

    if dry_run and replay is None:
        raise UsageError("--dry-run needs --replay FILE", hint="a live bot always writes")
    if reload and replay is not None:
        raise UsageError("--reload and --replay do not go together")
    _setup_logging(log_level, log_format)

    try:
        bot, path = load_bot(target, attr)
    except BotLoadError as exc:
        if not reload:
            raise
        path = Path(target).resolve()
        directory = path.parent if target.endswith(".py") else Path.cwd()
        bot = asyncio.run(_wait_for_loadable(target, attr, exc, directory))
    if health_file is not None:
        bot.health_file = health_file
    if dead_letters is not None:
        bot.dead_letters = dead_letters
    if state is not None:
        bot.state = state

    if replay is not None:
        lines = replay.read_text(encoding="utf-8").splitlines()
        has_server = conn.server is not None or _server_configured(conn.profile)
        failures = _ErrorCounter()
        counted: list[int] = []

        async def replay_main() -> None:
            hook = _print_write if dry_run else None
            if dry_run and not has_server:
                count = await bot.replay(lines, dry_run=hook)
            else:
                async with conn.client() as c:
                    count = await bot.replay(lines, client=c, dry_run=hook)
            counted.append(count)
            log.info("replayed %s from %s", _plural(count, "event"), replay)

        logging.getLogger("concordctl.bot").addHandler(failures)
        try:
            run_with_signals(bot, replay_main)
        finally:
            logging.getLogger("concordctl.bot").removeHandler(failures)
        if counted and counted[0] == 0:
            raise ReplayFailed(
                f"--replay: no event could be read from {replay}",
                hint="give an NDJSON recording (concordctl tail --json) or a dead-letter file",
            )
        if failures.count:
            raise ReplayFailed(
                f"--replay: {_plural(failures.count, 'handler failure')} in {replay}",
                hint="see the log above; --debug shows the tracebacks",
            )
        return

    async def live_main() -> None:
        watcher = (
            asyncio.create_task(_reloader(bot, target, attr, path), name="concordctl-reload")
            if reload
            else None
        )
        try:
            async with conn.client() as c:
                announce = asyncio.create_task(_announce(c, bot, path))
                try:
                    await bot.serve(client=c)
                finally:
                    announce.cancel()
                    await asyncio.gather(announce, return_exceptions=True)
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)

    run_with_signals(bot, live_main)


def _server_configured(profile: str | None) -> bool:
    """Whether the environment or a profile names a server (for --dry-run reads)."""
    try:
        from concordctl.config import resolve_settings

        settings = resolve_settings(None, profile=profile)
    except ConcordError:
        return False
    return bool(getattr(settings, "server", None))
