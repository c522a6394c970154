"""The pure parts of the command line: times, regexes, stdin text, keys, checkpoints."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from concordctl.cli.args import compile_regex, parse_time, read_password, read_text
from concordctl.cli.checkpoint import Checkpoint
from concordctl.cli.idempotency import has_marker, validate_key, with_marker
from concordctl.errors import UsageError

NOW = 1_764_000_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", NOW - 600_000),
        ("2h", NOW - 7_200_000),
        ("1d", NOW - 86_400_000),
        ("90s", NOW - 90_000),
        ("1.5h", NOW - 5_400_000),
        ("2 h ago", NOW - 7_200_000),
        ("1w", NOW - 604_800_000),
        ("now", NOW),
        ("1764000000123", 1_764_000_000_123),
        ("2025-11-24T16:00:00Z", 1_764_000_000_000),
        ("2025-11-24T17:00:00+01:00", 1_764_000_000_000),
    ],
)
def test_parse_time_accepts_relative_iso_and_epoch(text: str, expected: int) -> None:
    assert parse_time(text, now_ms=NOW) == expected


def test_parse_time_naive_iso_is_local_time() -> None:
    local = datetime(2025, 11, 24, 9, 30).astimezone()
    assert parse_time("2025-11-24T09:30", now_ms=NOW) == int(local.timestamp() * 1000)
    date_only = datetime(2025, 11, 24).astimezone()
    assert parse_time("2025-11-24", now_ms=NOW) == int(date_only.timestamp() * 1000)
    assert parse_time("2025-11-24 09:30:00", now_ms=NOW) == int(local.timestamp() * 1000)


@pytest.mark.parametrize("text", ["yesterday", "10x", "", "12", "2025-13-01", "-5m"])
def test_parse_time_rejects_garbage_with_the_option_name(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_time(text, option="--before", now_ms=NOW)
    assert info.value.exit_code == 2
    assert "--before" in str(info.value) and "10m" in str(info.value)


def test_compile_regex_reports_the_error() -> None:
    assert compile_regex("^ap+rove").search("approve")
    with pytest.raises(UsageError) as info:
        compile_regex("(unclosed")
    assert "--match" in str(info.value) and "(unclosed" in str(info.value)


class _Stdin(io.StringIO):
    def __init__(self, text: str, tty: bool = False) -> None:
        super().__init__(text)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_read_text_prefers_the_argument_and_reads_stdin_for_dash() -> None:
    assert read_text("hi", stdin=_Stdin("ignored")) == "hi"
    assert read_text("-", stdin=_Stdin("line 1\nline 2\n")) == "line 1\nline 2"
    assert read_text(None, stdin=_Stdin("a\r\n")) == "a"
    assert read_text(None, stdin=_Stdin("keep\n\n")) == "keep\n"
    with pytest.raises(UsageError):
        read_text(None, stdin=_Stdin(" \n"))


def test_read_password_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONCORD_PASSWORD", raising=False)
    assert read_password(True, stdin=_Stdin("s3cret\nrest")) == "s3cret"
    with pytest.raises(UsageError) as info:
        read_password(False, stdin=_Stdin(""))
    assert "--password-stdin" in str(info.value) and "CONCORD_PASSWORD" in str(info.value)
    monkeypatch.setenv("CONCORD_PASSWORD", "fromenv")
    assert read_password(False, stdin=_Stdin("")) == "fromenv"
    with pytest.raises(UsageError):
        read_password(True, stdin=_Stdin("\n"))


def test_key_marker_round_trip() -> None:
    content = with_marker("deploy v1.2 done", "release-v1.2")
    assert content == "deploy v1.2 done\n🔑 release-v1.2"
    assert has_marker(content, "release-v1.2")
    assert not has_marker(content, "release-v1.")
    assert not has_marker(content, "v1.2")
    assert not has_marker("deploy 🔑 release-v1.2", "release-v1.2")
    assert validate_key("ci/build#42") == "ci/build#42"
    for bad in ("", "two words", "-x", "a" * 101, "tab\tkey"):
        with pytest.raises(UsageError):
            validate_key(bad)


def test_checkpoint_is_written_atomically_and_only_forward(tmp_path: Path) -> None:
    path = tmp_path / "tail.ckpt"
    ckpt = Checkpoint.load(path)
    assert ckpt.chat_id is None and not path.exists()
    ckpt.advance(100, 1_000)
    ckpt.advance(90, 900)  # older: ignored
    assert json.loads(path.read_text()) == {"chatId": 100, "createdAt": 1_000}
    ckpt.advance(2**62 + 1, 2_000)
    again = Checkpoint.load(path)
    assert (again.chat_id, again.created_at) == (2**62 + 1, 2_000)
    assert [p.name for p in tmp_path.iterdir()] == ["tail.ckpt"]  # no temporary left


def test_checkpoint_notes_in_memory_and_commits_on_request(tmp_path: Path) -> None:
    path = tmp_path / "tail.ckpt"
    ckpt = Checkpoint.load(path)
    ckpt.commit()  # nothing noted: nothing written
    assert not path.exists()
    assert ckpt.note(100, 1_000) and ckpt.note(101, 1_001)
    assert not ckpt.note(99, 999)
    assert not path.exists()  # the tail's output may not be out yet
    ckpt.commit()
    assert json.loads(path.read_text()) == {"chatId": 101, "createdAt": 1_001}
    inode = path.stat().st_ino
    ckpt.commit()  # nothing new: not rewritten
    assert path.stat().st_ino == inode


@pytest.mark.parametrize("body", ["", "{", "[]", '{"chatId": "1"}', '{"chatId": -1}', "{}"])
def test_checkpoint_refuses_a_foreign_file(tmp_path: Path, body: str) -> None:
    path = tmp_path / "ckpt"
    path.write_text(body)
    with pytest.raises(UsageError) as info:
        Checkpoint.load(path)
    assert "checkpoint" in str(info.value)


def test_checkpoint_in_an_unwritable_place_fails_cleanly(tmp_path: Path) -> None:
    # The directory turns into a plain file after the tail started: nobody,
    # root included, can write into it.
    where = tmp_path / "dir"
    where.mkdir()
    ckpt = Checkpoint.load(where / "c")
    where.rmdir()
    where.write_text("")
    with pytest.raises(UsageError, match="cannot write"):
        ckpt.advance(1, 1)
    with pytest.raises(UsageError, match="cannot read"):
        Checkpoint.load(where / "c")


def test_epoch_iso_agree() -> None:
    moment = datetime.fromtimestamp(NOW / 1000, tz=UTC)
    assert parse_time(moment.isoformat(), now_ms=0) == NOW


def _chat_line(chat_id: int) -> bytes:
    import json as _json

    chat = {"id": chat_id, "createdAt": chat_id, "authorId": 1, "channelId": 2,
            "threadId": None, "content": "x", "edited": False, "reactions": {}}  # fmt: skip
    return _json.dumps({"type": "chat_sent", "chat": chat}).encode() + b"\n"


def test_checkpoint_takes_lines_written_after_its_last_save_as_seen(tmp_path: Path) -> None:
    # A tail killed after the flush of chats 11 and 12 but before saving the
    # checkpoint: the restarted tail must not print them again (exactly once),
    # and a half-written line is dropped (the restarted tail prints that chat).
    out = tmp_path / "log.ndjson"
    ckpt_path = tmp_path / "tail.ckpt"
    with out.open("ab") as sink:
        sink.write(_chat_line(10))
        sink.flush()
        first = Checkpoint.load(ckpt_path)
        first.attach_output(sink)
        first.note(10, 10)
        first.commit()
        sink.write(_chat_line(11) + _chat_line(12) + _chat_line(13)[:20])
    with out.open("ab") as sink:
        again = Checkpoint.load(ckpt_path)
        assert again.chat_id == 10
        again.attach_output(sink)
        assert again.chat_id == 12
    assert out.read_bytes() == _chat_line(10) + _chat_line(11) + _chat_line(12)
    # Another file (or a pipe) is not this checkpoint's output: nothing is taken.
    other = tmp_path / "other.ndjson"
    other.write_bytes(_chat_line(99))
    with other.open("ab") as sink:
        third = Checkpoint.load(ckpt_path)
        third.attach_output(sink)
        assert third.chat_id == 10


def test_checkpoint_in_an_unwritable_place_fails_at_start(tmp_path: Path) -> None:
    import pytest as _pytest

    from concordctl.errors import UsageError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with _pytest.raises(UsageError, match=r"cannot (read|write)"):
        Checkpoint.load(blocker / "tail.ckpt").check_writable()
