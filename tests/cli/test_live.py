"""tail, wait, demo, signals and terminals: `python -m concordctl` as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from concordctl.server import ServerThread
from tests.cli.conftest import Account, Proc, Secrets, send, wait_online
from tests.helpers import admin_http
from tests.helpers.timing import UNIT, wait_until

Spawn = Callable[..., Proc]


def _frame(account: Account, chat_id: object) -> str:
    """The chat_sent line `tail --json` must print for a chat: the REST chat, wrapped."""
    with account.http() as http:
        return '{"type":"chat_sent","chat":' + http.get(f"/api/chats/{chat_id}").text + "}"


def test_tail_json_is_live_exact_ndjson(
    spawn: Spawn, alice: Account, bob: Account, general: int
) -> None:
    tail = spawn("tail", "general", "--json", "--count", "4", env=bob.env)
    wait_online(alice, bob.id)
    chat = send(alice, general, "hello, live")
    # each line arrives while the tail is still running: flushed per event
    assert tail.readline() == _frame(alice, chat["id"])
    with alice.http() as http:
        http.patch(f"/api/chats/{chat['id']}", json={"content": "hello, edited"})
        assert json.loads(tail.readline()) == {
            "type": "chat_edited",
            "chatId": chat["id"],
            "channelId": general,
            "threadId": None,
            "content": "hello, edited",
        }
        http.post(f"/api/chats/{chat['id']}/reactions", json={"reaction": "✅", "adding": True})
        assert json.loads(tail.readline())["reactions"] == {"✅": 1}
        http.delete(f"/api/chats/{chat['id']}")
        assert json.loads(tail.readline()) == {
            "type": "chat_deleted",
            "chatId": chat["id"],
            "channelId": general,
            "threadId": None,
        }
    result = tail.finish()
    assert result.code == 0 and result.out == ""


def test_tail_human_lines_and_filters(
    spawn: Spawn, alice: Account, bob: Account, general: int, admin_password: str
) -> None:
    with admin_http(alice.url, admin_password) as http:
        other = http.post("/api/channels", json={"name": "other"}).json()["id"]
    tail = spawn(
        "tail", "general", "--type", "chat_sent", "--match", "^deploy", "--count", "2", env=bob.env
    )
    wait_online(alice, bob.id)
    send(alice, general, "not this one")
    send(alice, other, "deploy elsewhere")  # other channel
    first = send(alice, general, "deploy v1")
    with alice.http() as http:
        http.patch(f"/api/chats/{first['id']}", json={"content": "deploy v1!"})  # not chat_sent
    send(alice, general, "deploy v2\nwith details")
    result = tail.finish()
    assert result.code == 0, result.err
    lines = result.lines()
    assert len(lines) == 2
    assert f"#general {alice.name}: deploy v1  [{first['id']}]" in lines[0]
    assert lines[1].endswith("deploy v2 ⏎ with details  [" + lines[1].rsplit("[", 1)[1])
    assert "\x1b[" not in result.out  # not a terminal: no colours


def test_tail_timeout_and_backfill(spawn: Spawn, alice: Account, general: int) -> None:
    older = [send(alice, general, f"older {i}")["id"] for i in range(3)]
    tail = spawn("tail", "general", "--backfill", "2", "--count", "3", "--timeout", "1.5", "--json",
                 env=alice.env)  # fmt: skip
    result = tail.finish()
    assert result.code == 124, result.err
    # Backfilled chats count toward --count.
    assert "tail: 2 of 3 events in 1.5s" in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1
    assert [json.loads(line)["chat"]["id"] for line in result.lines()] == older[1:]
    # ...so a --count they satisfy exits 0 at once.
    tail = spawn("tail", "general", "--backfill", "2", "--count", "2", "--json", env=alice.env)
    result = tail.finish()
    assert result.code == 0, result.err
    assert [json.loads(line)["chat"]["id"] for line in result.lines()] == older[1:]


def test_tail_checkpoint_prints_what_it_missed_once(
    spawn: Spawn, alice: Account, bob: Account, general: int, tmp_path: Path
) -> None:
    ckpt = tmp_path / "tail.ckpt"
    first = spawn("tail", "general", "--json", "--count", "1", "--checkpoint", str(ckpt),
                  env=bob.env)  # fmt: skip
    wait_online(alice, bob.id)
    a = send(alice, general, "seen live")
    assert first.finish().code == 0
    assert json.loads(ckpt.read_text())["chatId"] == a["id"]
    missed = [send(alice, general, f"missed {i}")["id"] for i in range(3)]
    second = spawn("tail", "general", "--json", "--count", "3", "--checkpoint", str(ckpt),
                   env=bob.env)  # fmt: skip
    result = second.finish()
    assert result.code == 0, result.err
    events = [json.loads(line) for line in result.lines()]
    chats = [e for e in events if e["type"] == "chat_sent"]
    assert [c["chat"]["id"] for c in chats] == missed
    assert all(c["recovered"] is True for c in chats)
    assert json.loads(ckpt.read_text())["chatId"] == missed[-1]
    third = spawn("tail", "general", "--json", "--timeout", "1", "--checkpoint", str(ckpt),
                  env=bob.env)  # fmt: skip
    result = third.finish()
    assert result.code == 124
    assert not [line for line in result.lines() if '"chat_sent"' in line]  # once only


def test_tail_checkpoint_moves_past_filtered_chats_while_running(
    spawn: Spawn, alice: Account, bob: Account, general: int, tmp_path: Path
) -> None:
    ckpt = tmp_path / "tail.ckpt"
    tail = spawn("tail", "general", "--json", "--match", "^keep", "--checkpoint", str(ckpt),
                 env=bob.env)  # fmt: skip
    wait_online(alice, bob.id)
    keep = send(alice, general, "keep this")
    assert json.loads(tail.readline())["chat"]["id"] == keep["id"]
    skip = send(alice, general, "skip this")  # printed nowhere, yet seen

    def saved() -> object:
        return json.loads(ckpt.read_text())["chatId"] if ckpt.exists() else None

    wait_until(lambda: saved() == skip["id"], 10 * UNIT, "the checkpoint to pass a filtered chat")
    tail.popen.send_signal(signal.SIGINT)
    assert tail.finish().code == 130


def test_tail_survives_a_server_restart_with_a_gap_marker(
    spawn: Spawn, server_thread: ServerThread, alice: Account, bob: Account, general: int
) -> None:
    tail = spawn("tail", "general", "--json", env=bob.env)
    wait_online(alice, bob.id)
    before = send(alice, general, "before the restart")
    assert json.loads(tail.readline())["chat"]["id"] == before["id"]
    server_thread.call(server_thread.server.restart)
    during = send(alice, general, "sent while the tail reconnects")
    try:
        lines = [json.loads(tail.readline(timeout=10)) for _ in range(2)]
    except AssertionError:
        tail.popen.kill()
        print(tail.stderr()[-6000:])
        raise
    by_type = {line["type"]: line for line in lines}
    gap = by_type["concordctl.gap"]
    assert set(gap) == {"type", "since", "until"} and gap["since"] <= gap["until"]
    assert by_type["chat_sent"]["chat"]["id"] == during["id"]
    after = send(alice, general, "after")
    assert json.loads(tail.readline())["chat"]["id"] == after["id"]
    tail.popen.send_signal(signal.SIGINT)  # Ctrl-C
    result = tail.finish()
    assert result.code == 130
    assert "Traceback" not in result.err
    assert "reconnect" in result.err


def test_ctrl_c_exits_130_without_a_traceback(spawn: Spawn, alice: Account) -> None:
    tail = spawn("tail", env=alice.env)
    wait_online(alice, alice.id)
    tail.popen.send_signal(signal.SIGINT)
    result = tail.finish()
    assert result.code == 130 and "Traceback" not in result.err


# --------------------------------------------------------------------------
# wait
# --------------------------------------------------------------------------


def test_wait_for_a_matching_chat(spawn: Spawn, alice: Account, bob: Account, general: int) -> None:
    send(alice, general, "approve (sent before the wait: does not count)")
    gate = spawn("wait", "general", "--match", "^approve", "--author", alice.name,
                 "--timeout", "20", "--json", env=bob.env)  # fmt: skip
    wait_online(alice, bob.id)
    send(bob, general, "approve (from the wrong author)")
    send(alice, general, "not yet")
    chat = send(alice, general, "approve v1.2")
    result = gate.finish()
    assert result.code == 0, result.err
    assert result.out == _frame(alice, chat["id"]) + "\n"


def test_wait_times_out_and_ignores_older_chats_unless_since(
    spawn: Spawn, alice: Account, general: int
) -> None:
    old = send(alice, general, "approve, a while ago")
    late = spawn("wait", "general", "--match", "^approve", "--timeout", "1", env=alice.env)
    result = late.finish()
    assert result.code == 124
    assert "wait: no chat matching '^approve'" in result.err
    since = spawn("wait", "#general", "--match", "^approve", "--since", "10m", "--timeout", "10",
                  env=alice.env)  # fmt: skip
    result = since.finish()
    assert result.code == 0, result.err
    assert result.out.startswith(time.strftime("%H:")) or str(old["id"]) in result.out
    assert f"[{old['id']}]" in result.out


def test_wait_for_a_reaction(spawn: Spawn, alice: Account, bob: Account, general: int) -> None:
    deploy = send(alice, general, "deploy v2? react ✅")
    with bob.http() as http:  # bob's earlier 👍 does not count
        http.post(f"/api/chats/{deploy['id']}/reactions", json={"reaction": "👍", "adding": True})
    gate = spawn("wait", "general", "--reaction", "✅", "--on", str(deploy["id"]),
                 "--author", bob.name, "--timeout", "20", env=alice.env)  # fmt: skip
    wait_online(bob, alice.id)
    with alice.http() as http:  # the wrong user
        http.post(f"/api/chats/{deploy['id']}/reactions", json={"reaction": "✅", "adding": True})
    # No sleep to see the gate still waiting: the stream is ordered, so an
    # output naming bob proves that alice's earlier ✅ did not end the gate.
    with bob.http() as http:
        http.post(f"/api/chats/{deploy['id']}/reactions", json={"reaction": "✅", "adding": True})
    result = gate.finish()
    assert result.code == 0, result.err
    assert result.out == f"{bob.name} reacted ✅ on chat {deploy['id']}\n"


def test_wait_for_a_reaction_json_since_and_timeout(
    spawn: Spawn, alice: Account, general: int
) -> None:
    deploy = send(alice, general, "deploy v3")
    with alice.http() as http:
        http.post(f"/api/chats/{deploy['id']}/reactions", json={"reaction": "✅", "adding": True})
    old = spawn("wait", "general", "--reaction", "✅", "--on", str(deploy["id"]), "--timeout", "1",
                env=alice.env)  # fmt: skip
    assert old.finish().code == 124  # it was there before the wait started
    since = spawn("wait", "general", "--reaction", "✅", "--on", str(deploy["id"]), "--since",
                  "1h", "--json", "--timeout", "10", env=alice.env)  # fmt: skip
    result = since.finish()
    assert result.code == 0, result.err
    assert json.loads(result.out) == {
        "type": "chat_reactions_updated",
        "chatId": deploy["id"],
        "channelId": general,
        "threadId": None,
        "reactions": {"✅": 1},
    }
    missing = spawn("wait", "general", "--reaction", "✅", "--on", "1234", env=alice.env)
    assert missing.finish().code == 4


# --------------------------------------------------------------------------
# demo, terminals, start-up
# --------------------------------------------------------------------------


def test_demo_runs_and_leaves_nothing_behind(tmp_path: Path, secrets: Secrets) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")},
        "TMPDIR": str(tmp),
        "CONCORD_CONFIG": str(tmp_path / "untouched.toml"),
    }
    # --pace 0: the same script without the 0.5 s pauses between its nine steps;
    # the end waits for the tail to show the last events either way.
    proc = subprocess.run(
        [sys.executable, "-m", "concordctl", "demo", "--pace", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60 * UNIT,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for expected in ("pingbot: pong", "✎ edited", "☺ reactions", "✗ deleted", "is typing",
                     "$ concordctl send general"):  # fmt: skip
        assert expected in out, expected
    assert list(tmp.iterdir()) == []  # the temporary database is gone
    assert not (tmp_path / "untouched.toml").exists()
    assert "Traceback" not in proc.stderr


def _in_a_terminal(args: list[str], env: dict[str, str]) -> str:
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "concordctl", *args],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
            env={**os.environ, **env, "TERM": "xterm-256color", "COLUMNS": "200"},
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=20)
        return b"".join(chunks).decode()
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


def test_colours_on_a_terminal_unless_no_color(alice: Account, general: int) -> None:
    send(alice, general, "colourful")
    env = {**alice.env, "CONCORD_CONFIG": os.devnull}
    env.pop("NO_COLOR", None)
    coloured = _in_a_terminal(["history", "general", "-n", "1"], env)
    assert "colourful" in coloured and "\x1b[" in coloured
    plain = _in_a_terminal(["history", "general", "-n", "1"], {**env, "NO_COLOR": "1"})
    assert "colourful" in plain and "\x1b[" not in plain


@pytest.mark.parametrize(
    ("args", "absent"),
    [
        (["send", "{general}", "imports"], ("websockets", "rich", "pydantic", "concordctl.server")),
        (["history", "{general}", "--json"], ("rich", "concordctl.server", "concordctl.bot")),
    ],
)
def test_commands_import_only_what_they_need(
    alice: Account, general: int, args: list[str], absent: tuple[str, ...]
) -> None:
    argv = [a.format(general=general) for a in args]
    code = (
        "import sys\n"
        "from concordctl.cli.app import run\n"
        f"assert run({argv!r}) == 0\n"
        f"loaded = [m for m in {absent!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **alice.env, "CONCORD_CONFIG": os.devnull},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr


def test_tail_with_a_token_never_imports_the_http_stack(
    alice: Account, bob: Account, general: int
) -> None:
    # The stream needs no REST call here (no names, no cursor, a fresh
    # token), so the REST client and httpx, most of tail's start-up, are
    # never made or imported.
    absent = ("httpx", "httpcore", "concordctl.rest", "rich", "concordctl.server")
    code = (
        "import sys\n"
        "from concordctl.cli.app import run\n"
        "assert run(['tail', '--json', '--type', 'chat_sent', '--count', '1']) == 0\n"
        f"loaded = [m for m in {absent!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, **bob.env, "CONCORD_CONFIG": os.devnull},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_online(alice, bob.id)
        chat = send(alice, general, "no http stack")
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out)["chat"]["id"] == chat["id"]


def test_debug_logs_never_show_the_token(spawn: Spawn, alice: Account, general: int) -> None:
    send(alice, general, "before")
    tail = spawn("--debug", "tail", "general", "--backfill", "1", env=alice.env)
    # The websocket URL is logged, redacted, once the stream opens; then Ctrl-C.
    wait_until(lambda: "token=***" in tail.stderr(), 10 * UNIT, "the logged websocket URL")
    tail.popen.send_signal(signal.SIGINT)
    result = tail.finish()  # Proc checks every secret against stdout and stderr
    assert result.code == 130
    assert "before" in result.out


def test_shell_completion(alice: Account) -> None:
    env = {
        **os.environ,
        "_CONCORDCTL_COMPLETE": "complete_bash",
        "COMP_WORDS": "concordctl se",
        "COMP_CWORD": "1",
    }
    script = Path(sys.executable).with_name("concordctl")
    proc = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert {"send", "search"} <= set(proc.stdout.split())


def test_login_prompts_for_the_password_on_a_terminal(alice: Account, cli_env: Path) -> None:
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: concordctl on the terminal
        os.execve(
            sys.executable,
            [sys.executable, "-m", "concordctl", "login", "-s", alice.url, "-u", alice.name],
            {**os.environ, "CONCORD_CONFIG": str(cli_env)},
        )
    seen = b""
    deadline = time.monotonic() + 20
    while b"Password:" not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 1)[0]:
            seen += os.read(fd, 1024)
    assert b"Password:" in seen
    os.write(fd, alice.password.encode() + b"\n")
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 1)[0]:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert alice.password.encode() not in seen  # not echoed
    assert b"logged in" in seen and "token" in cli_env.read_text()


_BOT = """
from concordctl import Bot, Context

bot = Bot(prefix="!")


@bot.command("ping")
async def ping(ctx: Context) -> None:
    await ctx.reply("pong")


@bot.command("echo")
async def echo(ctx: Context) -> None:
    await ctx.reply(" ".join(ctx.args))
"""


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_run_prints_its_start_line_even_at_log_level_warning(
    spawn: Spawn, alice: Account, tmp_path: Path, log_format: str
) -> None:
    # issue 13 §1: `run` prints one line at start (user, server, commands);
    # --log-level warning quiets the rest, not that line.
    bot_file = tmp_path / "bot.py"
    bot_file.write_text(_BOT, encoding="utf-8")
    args = ["run", str(bot_file), "--log-level", "warning", "--log-format", log_format]
    proc = spawn(*args, env=alice.env)
    wait_until(lambda: "running bot.py" in proc.stderr(), 10 * UNIT, "the start line")
    wait_online(alice, alice.id)
    proc.popen.send_signal(signal.SIGTERM)
    result = proc.finish(timeout=10 * UNIT)
    assert result.code == 0, result.err
    assert result.out == ""
    lines = result.err.splitlines()
    wanted = f"running bot.py as {alice.name} on {alice.url}: 3 commands (!echo, !help, !ping)"
    if log_format == "json":
        records = [json.loads(line) for line in lines]  # every stderr line is JSON
        start = [r for r in records if r["message"].startswith("running ")]
        assert [(r["message"], r["level"], r["logger"]) for r in start] == [
            (wanted, "info", "concordctl.run")
        ]
        assert all(r["level"] in ("info", "warning", "error") for r in records)
        assert [r for r in records if r["level"] == "info"] == start  # nothing else below warning
    else:
        start = [line for line in lines if "running bot.py" in line]
        assert len(start) == 1 and start[0].endswith(f"INFO concordctl.run: {wanted}"), lines
        assert not [line for line in lines if " INFO " in line and line not in start]
