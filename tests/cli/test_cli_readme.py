"""The README's command-line section names only commands and flags that exist."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tests.cli.conftest import Result

README = Path(__file__).resolve().parents[2] / "README.md"


def _section() -> str:
    text = README.read_text()
    return text.split("## The command line", 1)[1].split("\n## ", 1)[0]


def test_every_command_and_flag_in_the_readme_exists(cli: Callable[..., Result]) -> None:
    blocks = re.findall(r"```(?:sh)?\n(.*?)```", _section(), re.S)
    uses: dict[str, set[str]] = {}
    for block in blocks:
        for match in re.finditer(r"concordctl ([a-z]+)((?: [^|#\n]*)?)", block):
            uses.setdefault(match.group(1), set()).update(
                re.findall(r"(--[a-z-]+)", match.group(2))
            )
    assert {"login", "send", "tail", "wait", "search", "history"} <= set(uses)
    for command, flags in uses.items():
        help_text = cli(command, "--help").out
        assert help_text, command
        for flag in flags:
            assert flag in help_text, f"concordctl {command} {flag}"


def test_the_readme_links_the_ci_examples() -> None:
    section = _section()
    root = README.parent
    for link in re.findall(r"\]\((examples/[^)]+)\)", section):
        assert (root / link).is_file(), link
    assert "examples/ci-notify.sh" in section and "github-actions.yml" in section
