"""Shell completion: bash, zsh and fish, with channel, user and profile names.

The shell scripts (``concordctl --show-completion bash|zsh|fish``) call
``concordctl`` with ``_CONCORDCTL_COMPLETE=complete_<shell>`` and the words
typed so far (Typer's protocol: ``COMP_WORDS``/``COMP_CWORD`` for bash,
``_TYPER_COMPLETE_ARGS`` for zsh and fish).

Where the word being completed is a channel (a CHANNEL argument,
``--channel``, ``--parent``), a user (``--author``, ``users promote``) or a
profile (``--profile``), :func:`fast_complete` answers before Typer or the
command modules are even imported, from a small cache under the user cache
dir (``channels``/``users`` of that server and user, fresh for
:data:`CACHE_SECONDS`), so a TAB answers in well under 150 ms once warm. A
stale or missing cache is filled from the server (bounded by
:data:`FETCH_SECONDS`; a server that does not answer gives no names, never
an error). Everything else (commands, options) is Click's completion.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CACHE_SECONDS",
    "SCRIPTS",
    "complete_channel",
    "complete_profile",
    "complete_user",
    "fast_complete",
    "script_for",
]

COMPLETE_VAR = "_CONCORDCTL_COMPLETE"
#: How long fetched names are used without asking the server again.
CACHE_SECONDS = 60.0
#: The most a TAB waits for the server when the cache is cold.
FETCH_SECONDS = 2.0

SCRIPTS = {
    "bash": """\
_concordctl_completion() {
    local IFS=$'\\n'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \\
                   COMP_CWORD=$COMP_CWORD \\
                   _CONCORDCTL_COMPLETE=complete_bash $1 ) )
    return 0
}

complete -o default -F _concordctl_completion concordctl""",
    "zsh": """\
#compdef concordctl

_concordctl_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" \\
    _CONCORDCTL_COMPLETE=complete_zsh concordctl)
}

compdef _concordctl_completion concordctl""",
    "fish": (
        "complete --command concordctl --no-files --arguments "
        '"(env _CONCORDCTL_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=get-args '
        '_TYPER_COMPLETE_ARGS=(commandline -cp) concordctl)" --condition '
        '"env _CONCORDCTL_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=is-args '
        '_TYPER_COMPLETE_ARGS=(commandline -cp) concordctl"'
    ),
}


def script_for(shell: str | None) -> str:
    """The completion script for ``shell`` (default: the login shell's)."""
    from concordctl.errors import UsageError

    name = shell or Path(os.environ.get("SHELL", "bash")).name
    if name not in SCRIPTS:
        raise UsageError(
            f"no completion for shell {name!r}", hint="give one of: " + ", ".join(SCRIPTS)
        )
    return SCRIPTS[name]


# --------------------------------------------------------------------------
# Which word is being completed
# --------------------------------------------------------------------------

# Options that take a value (so the word after them is not a positional).
_VALUE_OPTIONS = frozenset(
    [
        "--server",
        "-s",
        "--profile",
        "-p",
        "--timeout",
        "--jq",
        "--ca-cert",
        "--thread",
        "--key",
        "--limit",
        "-n",
        "--before",
        "--after",
        "--channel",
        "-c",
        "--author",
        "-a",
        "--type",
        "-t",
        "--match",
        "-m",
        "--backfill",
        "-b",
        "--count",
        "--since",
        "--checkpoint",
        "--reaction",
        "-r",
        "--on",
        "--parent",
        "--description",
        "--name",
        "--username",
        "-u",
        "--log-level",
        "--log-format",
        "--replay",
        "--state",
        "--attr",
        "--health-file",
        "--dead-letters",
    ]
)
_CHANNEL_OPTIONS = frozenset(("--channel", "-c", "--parent"))
_USER_OPTIONS = frozenset(("--author", "-a"))
_PROFILE_OPTIONS = frozenset(("--profile", "-p"))
# (command words) -> which positional arguments are channels (None: all of them).
_CHANNEL_POSITIONALS: dict[tuple[str, ...], frozenset[int] | None] = {
    ("send",): frozenset((0,)),
    ("history",): frozenset((0,)),
    ("typing",): frozenset((0,)),
    ("wait",): frozenset((0,)),
    ("tail",): None,
    ("channels", "edit"): frozenset((0,)),
    ("channels", "delete"): frozenset((0,)),
}
_USER_POSITIONALS: dict[tuple[str, ...], frozenset[int] | None] = {
    ("users", "promote"): frozenset((0,)),
}
_PROFILE_POSITIONALS: dict[tuple[str, ...], frozenset[int] | None] = {
    ("profiles", "use"): frozenset((0,)),
    ("profiles", "delete"): frozenset((0,)),
}
_GROUPS = frozenset(("channels", "users", "auth", "profiles", "bot"))


def slot(args: Sequence[str]) -> str | None:
    """What the next word after ``args`` is: "channel", "user", "profile" or None."""
    if args and args[-1] in _CHANNEL_OPTIONS:
        return "channel"
    if args and args[-1] in _USER_OPTIONS:
        return "user"
    if args and args[-1] in _PROFILE_OPTIONS:
        return "profile"
    if args and args[-1].startswith("-") and args[-1] in _VALUE_OPTIONS:
        return None
    words: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in _VALUE_OPTIONS
        else:
            words.append(arg)
    if not words:
        return None
    depth = 2 if words[0] in _GROUPS else 1
    command, positionals = tuple(words[:depth]), len(words) - depth
    if positionals < 0:
        return None
    for kind, table in (
        ("channel", _CHANNEL_POSITIONALS),
        ("user", _USER_POSITIONALS),
        ("profile", _PROFILE_POSITIONALS),
    ):
        if command in table:
            which = table[command]
            if which is None or positionals in which:
                return kind
    return None


def _option_value(args: Sequence[str], names: tuple[str, ...]) -> str | None:
    value = None
    for i, arg in enumerate(args[:-1]):
        if arg in names:
            value = args[i + 1]
    return value


# --------------------------------------------------------------------------
# Names: profiles from the config file, channels and users from a cache
# --------------------------------------------------------------------------


def profile_names() -> list[str]:
    from concordctl.config import load_config

    try:
        profiles = load_config().get("profiles", {})
    except Exception:  # a broken config file completes nothing
        return []
    return sorted(profiles) if isinstance(profiles, dict) else []


def cache_dir() -> Path:
    import platformdirs

    return platformdirs.user_cache_path("concordctl") / "completion"


def _cache_file(server: str, who: str) -> Path:
    digest = hashlib.sha256(f"{server}\0{who}".encode()).hexdigest()[:20]
    return cache_dir() / f"{digest}.json"


def _read_cache(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".names-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        pass


def _fetch(settings: Any) -> dict[str, Any] | None:
    """Channel and user names from the server, or None if it does not answer."""
    import asyncio

    from concordctl.client import Client, flatten_channels
    from concordctl.errors import ConcordError

    async def fetch() -> dict[str, Any]:
        async with Client(settings=settings, max_retries=0) as c:
            tree, users = await asyncio.gather(c.channels(), c.users())
        return {
            "at": time.time(),
            "channels": sorted({ch.name for ch in flatten_channels(tree)}),
            "users": sorted({u.username for u in users}),
        }

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(FETCH_SECONDS):
            return await fetch()

    try:
        return asyncio.run(bounded())
    except (ConcordError, TimeoutError, OSError):
        return None


def server_names(kind: str, server: str | None = None, profile: str | None = None) -> list[str]:
    """``channels`` or ``users`` of the configured server, cached for a minute."""
    from concordctl.config import resolve_settings
    from concordctl.errors import ConcordError

    try:
        settings = resolve_settings(server, profile=profile, timeout=FETCH_SECONDS)
        if not settings.server:
            return []
        base = settings.base_url
    except ConcordError:
        return []
    path = _cache_file(base, settings.username or settings.profile)
    cached = _read_cache(path)
    fresh = cached is not None and time.time() - float(cached.get("at", 0)) < CACHE_SECONDS
    if not fresh:
        fetched = _fetch(settings)
        if fetched is not None:
            _write_cache(path, fetched)
            cached = fetched
    names = (cached or {}).get(kind, [])
    return [str(n) for n in names] if isinstance(names, list) else []


def names_for(kind: str, incomplete: str, args: Sequence[str] = ()) -> list[str]:
    """The names of ``kind`` that start with ``incomplete`` (a ``#`` kept)."""
    if kind == "profile":
        candidates = profile_names()
    else:
        candidates = server_names(
            "channels" if kind == "channel" else "users",
            _option_value([*args, ""], ("--server", "-s")),
            _option_value([*args, ""], ("--profile", "-p")),
        )
    hash_ = "#" if kind == "channel" and incomplete.startswith("#") else ""
    prefix = incomplete[len(hash_) :].casefold()
    return [hash_ + n for n in candidates if n.casefold().startswith(prefix)]


# Typer ``autocompletion=`` callbacks (the slow path, when Click completes).
def complete_channel(incomplete: str) -> list[str]:
    return names_for("channel", incomplete)


def complete_user(incomplete: str) -> list[str]:
    return names_for("user", incomplete)


def complete_profile(incomplete: str) -> list[str]:
    return names_for("profile", incomplete)


# --------------------------------------------------------------------------
# The fast path
# --------------------------------------------------------------------------


def _words() -> tuple[str, list[str], str] | None:
    """(shell, words before the cursor, the incomplete word) from the environment."""
    mode = os.environ.get(COMPLETE_VAR, "")
    shell = mode.removeprefix("complete_")
    try:
        if shell == "bash":
            words = shlex.split(os.environ.get("COMP_WORDS", ""))
            cword = int(os.environ.get("COMP_CWORD", "0"))
            return shell, words[1:cword], words[cword] if cword < len(words) else ""
        if shell in ("zsh", "fish"):
            line = os.environ.get("_TYPER_COMPLETE_ARGS", "")
            words = shlex.split(line)[1:]
            if words and not line.endswith(" "):
                return shell, words[:-1], words[-1]
            return shell, words, ""
    except ValueError:  # an unbalanced quote: let Click deal with it
        return None
    return None


def _format(shell: str, values: list[str]) -> str:
    if shell == "zsh":
        if not values:
            return "_files"

        def escape(s: str) -> str:
            return (
                s.replace('"', '""')
                .replace("'", "''")
                .replace("$", "\\$")
                .replace("`", "\\`")
                .replace(":", r"\\:")
            )

        inner = "\n".join(f'"{escape(v)}"' for v in values)
        return f"_arguments '*: :(({inner}))'"
    return "\n".join(values)


def fast_complete() -> bool:
    """Answer a completion request for a name without Typer; False: not one of those."""
    parsed = _words()
    if parsed is None:
        return False
    shell, args, incomplete = parsed
    kind = slot(args)
    if kind is None or incomplete.startswith("-"):
        return False
    values = names_for(kind, incomplete, args)
    if shell == "fish" and os.environ.get("_TYPER_COMPLETE_FISH_ACTION") == "is-args":
        sys.exit(0 if values else 1)
    out = _format(shell, values)
    if out:
        sys.stdout.write(out + "\n")
    sys.stdout.flush()
    return True
