"""The pydantic-free coercion gives exactly typer's results, or defers to typer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from concordctl.cli.coercion import _MISSING, _quick


def _param(annotation: Any, **option: Any) -> Any:
    """The typer parameter object for one option with ``annotation``."""
    app = typer.Typer()

    def cmd(x: Any = None) -> None: ...

    # set by hand: with postponed annotations typer could not resolve a local
    cmd.__annotations__ = {"x": Annotated[annotation, typer.Option("--x", **option)]}
    app.command()(cmd)

    @app.command()
    def other() -> None: ...

    command = typer.main.get_command(app)
    return command.commands["cmd"].params[0]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("annotation", "option", "value"),
    [
        (str, {}, "text"),
        (str | None, {}, "#general"),
        (int, {}, "42"),
        (int | None, {}, "-7"),
        (int, {"min": 1}, "1"),
        (int, {}, 5),
        (int, {}, 2**70),
        (float | None, {"min": 0}, "1.5"),
        (float | None, {"min": 0}, "2"),
        (float, {}, 3),
        (float, {}, ".5"),
        (list[str] | None, {}, ("a", "b")),
    ],
)
def test_quick_path_matches_typer(annotation: Any, option: dict[str, Any], value: Any) -> None:
    param = _param(annotation, **option)
    ours = _quick(value, param, param.multiple or param.nargs == -1)
    assert ours is not _MISSING
    theirs = typer._coercion.build_runtime_param(param.type_descriptor).coerce(
        value, param=param, ctx=None
    )
    assert ours == theirs and type(ours) is type(theirs)


@pytest.mark.parametrize(
    ("annotation", "option", "value"),
    [
        (int, {"min": 1}, "0"),  # out of range: typer's message
        (int, {}, "1_000"),
        (int, {}, " 7"),
        (int, {}, "1.5"),
        (float, {"max": 1}, "2"),
        (float, {}, "1e3"),
        (int, {"min": 1, "clamp": True}, "0"),
        (Path | None, {}, "some/file"),
        (list[str] | None, {}, ()),
        (bool, {}, "yes"),
    ],
)
def test_everything_else_goes_to_typer(annotation: Any, option: dict[str, Any], value: Any) -> None:
    param = _param(annotation, **option)
    assert _quick(value, param, param.multiple or param.nargs == -1) is _MISSING


def test_the_command_line_still_rejects_bad_numbers(tmp_path: Path) -> None:
    from concordctl.cli.app import run

    runner = CliRunner()
    with runner.isolation() as (_, err, _):
        assert run(["history", "general", "--limit", "0"]) == 2
        assert run(["tail", "--count", "abc"]) == 2
        assert b"--count" in err.getvalue()
