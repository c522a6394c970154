"""The README's command-line section: every command and flag exists, and its
quick start runs as written against a fresh server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.cli.conftest import Result
from tests.helpers.timing import UNIT

README = Path(__file__).resolve().parents[2] / "README.md"
GROUPS = {"channels", "users", "auth", "profiles", "bot"}


def _section() -> str:
    text = README.read_text()
    return text.split("## The command line", 1)[1].split("\n## ", 1)[0]


def test_every_command_and_flag_in_the_readme_exists(cli: Callable[..., Result]) -> None:
    blocks = re.findall(r"```(?:sh)?\n(.*?)```", _section(), re.S)
    uses: dict[tuple[str, ...], set[str]] = {}
    for block in blocks:
        for match in re.finditer(r"concordctl ([a-z]+)((?: [^|#\n]*)?)", block):
            command: tuple[str, ...] = (match.group(1),)
            rest = match.group(2).split()
            if command[0] in GROUPS and rest and re.fullmatch(r"[a-z]+", rest[0]):
                command += (rest[0],)
            uses.setdefault(command, set()).update(re.findall(r"(--[a-z-]+)", match.group(2)))
    assert {("login",), ("send",), ("tail",), ("wait",), ("search",), ("history",)} <= set(uses)
    assert ("channels", "create") in uses and ("users", "promote") in uses
    for command, flags in uses.items():
        help_text = cli(*command, "--help").out
        assert help_text, command
        for flag in flags:
            assert flag in help_text, f"concordctl {' '.join(command)} {flag}"


def test_the_readme_links_the_ci_examples() -> None:
    section = _section()
    root = README.parent
    for link in re.findall(r"\]\((examples/[^)]+)\)", section):
        assert (root / link).is_file(), link
    assert "examples/ci-notify.sh" in section and "github-actions.yml" in section


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_quick_start_runs_as_written_on_a_fresh_server(tmp_path: Path) -> None:
    block = _section().split("### Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert "concordctl channels create releases" in block
    assert block.index("channels create releases") < block.index("send releases")
    # Only the port changes (8080 may be taken on this machine), and the 3 s sleep
    # ends as soon as the port answers (it still gives up waiting after 3 s).
    port = _free_port()
    sleep = "sleep 3   # the server takes a moment to start\n"
    assert sleep in block
    answers = f"(: </dev/tcp/127.0.0.1/{port}) 2>/dev/null"
    poll = f"for _ in $(seq 300); do {answers} && break; sleep 0.01; done\n"
    block = block.replace(sleep, poll).replace("8080", str(port))
    script = "set -e\ntrap 'kill $! 2>/dev/null' EXIT\n" + block
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_") and k != "NO_COLOR"}
    env |= {
        "PATH": f"{bin_dir}:{env.get('PATH', '')}",
        "CONCORD_CONFIG": str(tmp_path / "config.toml"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    run = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60 * UNIT,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "v1.2 shipped" in out  # history and tail
    assert out.count("v1.2 shipped") == 2
    assert "general\nreleases\n" in out  # channels --jq '.[].name'
    assert "user:             admin" in out  # auth status
    assert "registered ci [" in out
    assert "ci [" in run.stderr and "is an admin" in run.stderr
