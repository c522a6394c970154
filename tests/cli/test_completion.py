"""Shell completion through the installed ``concordctl`` script, as a shell runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import Account, Result

Cli = Callable[..., Result]
SCRIPT = str(Path(sys.executable).with_name("concordctl"))


def _complete(shell: str, line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    extra = {"_CONCORDCTL_COMPLETE": f"complete_{shell}"}
    if shell == "bash":
        words = line.split(" ")
        extra |= {"COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    else:
        extra["_TYPER_COMPLETE_ARGS"] = line
        if shell == "fish":
            extra["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    return subprocess.run(
        [SCRIPT], env={**os.environ, **env, **extra}, capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def admin_env(admin: Account, cli_env: Path) -> dict[str, str]:
    return {**admin.env, "CONCORD_CONFIG": str(cli_env)}


def test_show_completion_gives_the_named_shell(cli: Cli) -> None:
    zsh = cli("--show-completion", "zsh")
    assert zsh.code == 0 and "#compdef concordctl" in zsh.out and "complete_zsh" in zsh.out
    fish = cli("--show-completion", "fish")
    assert fish.out.startswith("complete --command concordctl") and "complete_fish" in fish.out
    bash = cli("--show-completion", "bash")
    assert "complete -o default -F _concordctl_completion concordctl" in bash.out
    r = cli("--show-completion", "tcsh")
    assert r.code == 2 and "bash, zsh, fish" in r.err


def test_channel_user_and_profile_names_complete(
    cli: Cli, admin: Account, alice: Account, admin_env: dict[str, str]
) -> None:
    assert cli("channels", "create", "releases", env=admin.env).code == 0
    assert cli("channels", "create", "random", env=admin.env).code == 0
    for shell in ("bash", "zsh", "fish"):
        out = _complete(shell, "concordctl send re", admin_env).stdout
        assert "releases" in out and "random" not in out and "general" not in out, (shell, out)
    assert _complete("bash", "concordctl tail general ", admin_env).stdout.split() == sorted(
        ["general", "random", "releases"]
    )
    quoted = _complete("bash", "concordctl send '#r", admin_env).stdout.split()
    assert quoted == ["#random", "#releases"]
    assert _complete("bash", "concordctl history #re", admin_env).stdout.split() == ["#releases"]
    users = _complete("bash", f"concordctl search --author {alice.name[:6]}", admin_env)
    assert alice.name in users.stdout.split()
    # the command words and options are Click's, as before
    assert {"send", "search"} <= set(_complete("bash", "concordctl se", admin_env).stdout.split())
    r = cli("login", "-s", alice.url, "-u", alice.name, "--password-stdin", "--profile", "work",
            input=alice.password + "\n")  # fmt: skip
    assert r.code == 0
    r = _complete("bash", "concordctl whoami --profile w", admin_env)
    assert r.stdout.split() == ["work"]


def test_warm_completion_is_answered_from_the_cache(
    cli: Cli, admin: Account, admin_env: dict[str, str]
) -> None:
    # A warm TAB does not ask the server (its speed is bench_cli.py's, against a
    # floor measured in the same run: no absolute time is asserted in a test).
    assert cli("channels", "create", "releases", env=admin.env).code == 0
    assert _complete("bash", "concordctl send re", admin_env).stdout.split() == ["releases"]
    assert cli("channels", "create", "reports", env=admin.env).code == 0
    for _ in range(3):
        r = _complete("bash", "concordctl send re", admin_env)
        assert r.stdout.split() == ["releases"]  # the cached list, within CACHE_SECONDS


def test_an_unreachable_server_completes_nothing_quickly(cli_env: Path) -> None:
    env = {"CONCORD_SERVER": "http://127.0.0.1:9", "CONCORD_TOKEN": "x",
           "CONCORD_CONFIG": str(cli_env)}  # fmt: skip
    started = time.monotonic()
    r = _complete("bash", "concordctl send ge", env)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr == ""
    assert time.monotonic() - started < 10
