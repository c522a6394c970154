"""The README's set-up commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _shell_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", text, re.S)]


def test_ci_runs_the_readme_test_command() -> None:
    setup = (ROOT / "README.md").read_text().split("## Set up", 1)[1].split("\n## ", 1)[0]
    blocks = _shell_blocks(setup)
    assert len(blocks) == 2, "the Set up section has exactly two commands"
    ci = (ROOT / ".ci" / "run").read_text()
    test_line = ci.split("# test-command:\n", 1)[1].strip().splitlines()[0]
    assert test_line == blocks[1]
    assert "pytest" in test_line and "concordctl demo" in blocks[0]
