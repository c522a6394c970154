"""Human lines and JSON output of render.py, without a server."""

from __future__ import annotations

import io
import json
import time

import pytest

from concordctl.cli import output, render
from concordctl.cli.output import EventWriter, StatusReporter
from concordctl.cli.render import Names, event_line, one_line
from concordctl.protocol import (
    Channel,
    ChannelCreated,
    Chat,
    ChatDeleted,
    ChatEdited,
    ChatReactionsUpdated,
    ChatSent,
    ChatTyping,
    Gap,
    UnknownEvent,
    UserJoined,
    UserStatusUpdated,
    decode_event,
)
from tests.helpers.timing import async_wait_until

NOW_MS = int(time.time() * 1000)
BIG = 2**62 + 12345
NAMES = Names(channels={7: "general"}, users={3: "alice"})


def _chat(content: str = "hello", **kw: object) -> Chat:
    fields: dict[str, object] = {
        "id": BIG,
        "created_at": NOW_MS,
        "author_id": 3,
        "channel_id": 7,
        "thread_id": None,
        "content": content,
        "edited": False,
        "reactions": {},
    }
    fields.update(kw)
    return Chat(**fields)  # type: ignore[arg-type]


def _plain(event: object) -> str:
    return event_line(event, NAMES).plain  # type: ignore[arg-type]


def test_chat_line_has_time_channel_author_content_and_id() -> None:
    line = _plain(ChatSent(chat=_chat()))
    assert line.startswith(time.strftime("%H:%M", time.localtime(NOW_MS / 1000)))
    assert " #general alice: hello" in line
    assert line.endswith(f"[{BIG}]")


def test_marks_for_every_kind_of_event() -> None:
    recovered = _plain(ChatSent(chat=_chat(edited=True, reactions={"👍": 2}), recovered=True))
    assert recovered.startswith("↺ ") and "(recovered)" in recovered
    assert "✎ (edited)" in recovered and "☺ 👍 2" in recovered
    assert "✎ edited" in _plain(ChatEdited(chat_id=1, channel_id=7, thread_id=None, content="x"))
    assert "✗ deleted [1]" in _plain(ChatDeleted(chat_id=1, channel_id=7, thread_id=None))
    reactions = _plain(
        ChatReactionsUpdated(chat_id=1, channel_id=7, thread_id=5, reactions={"✔️": 1})
    )
    assert "#general ›5 ☺ reactions on [1]: ✔️ 1" in reactions
    typing = _plain(ChatTyping(user_id=3, channel_id=7, thread_id=None, sent_at=NOW_MS))
    assert "… alice is typing" in typing
    gap = _plain(Gap(since=NOW_MS - 5000, until=NOW_MS))
    assert gap.startswith("── gap") and "may have been missed" in gap
    assert "alice → joined" in _plain(UserJoined(user_id=3))
    assert "● alice is online" in _plain(UserStatusUpdated(user_id=3, status="ONLINE"))
    channel = Channel(
        id=9,
        parent_channel_id=None,
        ordinality=0,
        name="ops",
        description=None,
        capabilities=None,
        created_at=NOW_MS,
        created_by_user_id=3,
    )
    assert "+ channel #ops created" in _plain(ChannelCreated(channel=channel))
    unknown = _plain(UnknownEvent("new_thing", {"type": "new_thing", "x": 1}))
    assert "? new_thing" in unknown and '"x":1' in unknown
    # unknown ids fall back to the number
    assert "#99 " in _plain(ChatDeleted(chat_id=1, channel_id=99, thread_id=None))


def test_content_cannot_break_the_line_or_drive_the_terminal() -> None:
    assert one_line("a\nb\r\nc\td") == "a ⏎ b ⏎ c d"
    evil = one_line("red \x1b[31m bell \x07 csi \x9b")
    assert "\x1b" not in evil and "\x07" not in evil and "\x9b" not in evil
    line = _plain(ChatSent(chat=_chat("[bold]not markup[/bold]")))
    assert "[bold]not markup[/bold]" in line


def test_dates_other_than_today_are_shown() -> None:
    assert render.format_time(0) == "--:--:--"
    old = render.format_time(1_000_000_000_000)
    assert old.startswith("2001-09-")


def test_json_lines_are_the_wire_json(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    frame = (
        b'{"type":"chat_sent","chat":{"id":%d,"createdAt":1,"authorId":3,"channelId":7,'
        b'"threadId":null,"content":"hi","edited":false,"reactions":{}}}' % BIG
    )
    writer = EventWriter()
    writer.write(decode_event(frame))
    writer.write(ChatSent(chat=decode_event(frame).chat, recovered=True))  # type: ignore[union-attr]
    writer.write(Gap(since=1, until=2))
    out = capsysbinary.readouterr().out.splitlines()
    assert out[0] == frame
    assert json.loads(out[1])["recovered"] is True
    assert json.loads(out[1])["chat"]["id"] == BIG
    assert json.loads(out[2]) == {"type": "concordctl.gap", "since": 1, "until": 2}


async def test_event_writer_runs_after_flush_once_the_lines_are_out() -> None:
    # tail --checkpoint writes its checkpoint in after_flush: it must never
    # run before the lines it covers have left the writer.
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8")
    seen: list[int] = []
    writer = EventWriter(out, after_flush=lambda: seen.append(raw.getvalue().count(b"\n")))
    for _ in range(3):
        writer.write(Gap(since=1, until=2))
    assert seen == [] and raw.getvalue() == b""  # batched until the loop gets control
    await async_wait_until(lambda: seen, what="the scheduled flush")
    assert seen == [3]  # one flush, one after_flush, after all three lines
    writer.request_flush()  # nothing pending (a filtered chat): after_flush all the same
    await async_wait_until(lambda: len(seen) == 2, what="the requested flush")
    assert seen == [3, 3]
    writer.close()
    assert seen == [3, 3, 3]


async def test_a_failing_after_flush_surfaces_in_the_next_write() -> None:
    failed: list[int] = []

    def fail() -> None:
        failed.append(1)
        raise OSError(28, "No space left on device")

    out = io.TextIOWrapper(io.BytesIO())  # kept: a collected wrapper closes its buffer
    writer = EventWriter(out, after_flush=fail)
    writer.write(Gap(since=1, until=2))
    # the scheduled flush fails: kept, not lost in the loop
    await async_wait_until(lambda: failed, what="the scheduled flush")
    with pytest.raises(OSError, match="No space"):
        writer.write(Gap(since=1, until=2))


def test_color_off_with_no_color_or_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert output.color_enabled(Tty())
    assert not output.color_enabled(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not output.color_enabled(Tty())


def test_colored_line_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    out = Tty()
    output._console(out).print(event_line(ChatSent(chat=_chat()), NAMES))
    assert "\x1b[" in out.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    out = Tty()
    output._console(out).print(event_line(ChatSent(chat=_chat()), NAMES))
    assert "\x1b[" not in out.getvalue() and "alice: hello" in out.getvalue()


class _State:
    def __init__(self, state: str, attempt: int = 0, error: str | None = None) -> None:
        self.state = state
        self.attempt = attempt
        self.delay = 0.5
        self.error = error


def test_status_without_a_terminal_is_one_plain_line_per_change() -> None:
    err = io.StringIO()
    status = StatusReporter(err)
    status(_State("connecting"))
    status(_State("connected"))
    status(_State("reconnecting", 1, "connection refused"))
    status(_State("reconnecting", 2, "connection refused"))
    status(_State("reconnecting", 3, "connection refused"))
    status(_State("connected"))
    lines = err.getvalue().splitlines()
    assert lines == [
        "concordctl: reconnecting (attempt 1, next try in 0.5s): connection refused",
        "concordctl: reconnected",
    ]


def test_status_on_a_terminal_is_a_live_line_cleared_on_reconnect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    err = Tty()
    status = StatusReporter(err)
    status(_State("reconnecting", 1, "connection refused"))
    assert status._status is not None  # a rich status line (spinner) is showing
    status(_State("reconnecting", 2, "connection refused"))
    status(_State("connected"))
    assert status._status is None
    text = err.getvalue()
    assert "reconnecting (attempt" in text and text.rstrip().endswith("concordctl: reconnected")
