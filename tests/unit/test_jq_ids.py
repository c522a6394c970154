"""``--jq`` and snowflakes: jq's numbers are doubles, the ids it prints are the input's."""

from __future__ import annotations

import json

import pytest

from concordctl.cli import output
from concordctl.cli.output import jq_lines

A, B, FAR = 680977672590852097, 680977672590852098, 680977672590860001  # A, B: one double


def test_an_id_extracted_or_kept_in_an_object_is_exact() -> None:
    doc = json.dumps([{"id": A, "n": 3, "text": f"see {A}"}, {"id": FAR}]).encode()
    assert jq_lines(".[0].id", doc) == f"{A}\n".encode()
    assert json.loads(jq_lines(".[0]", doc)) == {"id": A, "n": 3, "text": f"see {A}"}
    assert jq_lines(f".[] | select(.id == {FAR}) | .id", doc) == f"{FAR}\n".encode()
    assert jq_lines(".[0].n + 1", doc) == b"4\n"  # small numbers untouched


def test_two_ids_jq_cannot_tell_apart_are_left_as_jq_gave_them_with_a_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "_warned_ambiguous", False)
    doc = json.dumps([{"id": A}, {"id": B}]).encode()
    assert jq_lines(".[].id", doc) == f"{int(float(A))}\n".encode() * 2
    assert "jq rounds numbers past 2^53" in capsys.readouterr().err
