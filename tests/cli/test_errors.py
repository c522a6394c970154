"""Issue 13 §2: every exit code and message that was wrong, through the real entry point."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Account, Proc, Result, send, wait_online
from tests.helpers.timing import UNIT

Cli = Callable[..., Result]
Spawn = Callable[..., Proc]


def _one_line(r: Result) -> None:
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert "Traceback" not in r.err


def test_unknown_channel_id_is_not_found(cli: Cli, alice: Account) -> None:
    r = cli("send", "12345", "hello", env=alice.env)
    assert r.code == 4, r.err
    assert "no channel with id 12345" in r.err
    _one_line(r)


def test_server_url_ending_in_api_gets_its_hint(cli: Cli, alice: Account) -> None:
    r = cli("whoami", "-s", alice.url + "/api", env={"CONCORD_TOKEN": alice.token})
    assert r.code == 2, r.err
    assert "ends in /api" in r.err and f"e.g. {alice.url}" in r.err
    _one_line(r)


def test_https_to_a_plain_http_server_gets_its_hint(cli: Cli, alice: Account) -> None:
    https = alice.url.replace("http://", "https://")
    r = cli("whoami", "-s", https, env={"CONCORD_TOKEN": alice.token})
    assert r.code == 6, r.err
    assert "does not speak TLS" in r.err and f"use {alice.url}" in r.err
    _one_line(r)


@pytest.fixture
def not_concord() -> Iterator[str]:
    """A web server on loopback that is not Concord (404 text/html for everything)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<h1>nothing here</h1>")

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_server_that_is_not_concord_is_said_so(cli: Cli, not_concord: str) -> None:
    r = cli("whoami", "-s", not_concord, env={"CONCORD_TOKEN": "eyJhbGciOiJub25lIn0.e30.x"})
    assert r.code == 7, r.err
    assert "does not look like a Concord server" in r.err
    _one_line(r)
    r = cli("whoami", "-s", not_concord)  # no credentials either: still the real reason
    assert r.code == 7 and "does not look like a Concord server" in r.err


def _popen(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "concordctl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
    )


def test_a_closed_pipe_is_a_quiet_exit_0(alice: Account, general: int, cli_env: Path) -> None:
    for i in range(30):
        send(alice, general, f"line {i} " + "x" * 2000)
    env = {**alice.env, "CONCORD_CONFIG": str(cli_env)}
    for args in (["history", "general", "--limit", "30"], ["search", "line", "--limit", "30"]):
        proc = _popen(args, env)
        assert proc.stdout is not None
        proc.stdout.readline()
        proc.stdout.close()  # `| head -1`
        _, err = proc.communicate(timeout=20 * UNIT)
        assert proc.returncode == 0, (args, err)
        assert err == b"", (args, err)


def test_tail_exits_as_soon_as_its_pipe_closes(alice: Account, bob: Account, general: int,
                                               cli_env: Path) -> None:  # fmt: skip
    env = {**bob.env, "CONCORD_CONFIG": str(cli_env)}
    proc = _popen(["tail", "--json", "general"], env)
    assert proc.stdout is not None
    wait_online(alice, bob.id)
    send(alice, general, "first")
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1`: no event follows
    started = time.monotonic()
    _, err = proc.communicate(timeout=10 * UNIT)
    assert proc.returncode == 0 and err == b"", err
    assert time.monotonic() - started < 5 * UNIT


def test_tail_whose_first_connection_fails_exits_with_its_code(cli: Cli, alice: Account) -> None:
    for args in (["tail"], ["tail", "--json"]):
        started = time.monotonic()
        r = cli(*args, env={"CONCORD_SERVER": "http://127.0.0.1:9", "CONCORD_TOKEN": alice.token})
        assert r.code == 6, r.err
        assert time.monotonic() - started < 10 * UNIT
        assert "cannot" in r.err and "127.0.0.1:9" in r.err


def test_tail_unknown_type_and_unwritable_checkpoint_are_usage_errors(
    cli: Cli, alice: Account, tmp_path: Path
) -> None:
    r = cli("tail", "--type", "chat_snt", env=alice.env)
    assert r.code == 2 and "did you mean chat_sent" in r.err, r.err
    _one_line(r)
    blocker = tmp_path / "plain-file"
    blocker.write_text("")
    r = cli("tail", "--checkpoint", str(blocker / "ckpt"), env=alice.env)
    assert r.code == 2 and "--checkpoint" in r.err, r.err


def test_backfill_filters_first_then_takes_n(spawn: Spawn, alice: Account, general: int) -> None:
    for i in range(6):
        send(alice, general, f"deploy {i}" if i % 2 else f"chatter {i}")
    tail = spawn("tail", "general", "--backfill", "2", "--match", "^deploy", "--count", "2",
                 "--json", env=alice.env)  # fmt: skip
    result = tail.finish()
    assert result.code == 0, result.err
    assert [json.loads(x)["chat"]["content"] for x in result.lines()] == ["deploy 3", "deploy 5"]


def test_history_filters_and_the_limit_notice(cli: Cli, alice: Account, general: int) -> None:
    chats = [send(alice, general, f"h{i}") for i in range(5)]
    r = cli("history", "general", "--limit", "3", env=alice.env)
    assert r.code == 0, r.err
    assert "showing the newest 3 chats of more; raise it with --limit N" in r.err
    assert [line.split(": ", 1)[1].split()[0] for line in r.lines()] == ["h2", "h3", "h4"]
    r = cli("history", "general", "--limit", "10", env=alice.env)
    assert "showing" not in r.err
    after = str(chats[2]["createdAt"])
    r = cli("history", "general", "--after", after, "--jq", ".[].content", env=alice.env)
    assert r.code == 0, r.err
    assert set(r.lines()) <= {"h3", "h4"} and "h4" in r.lines()
    r = cli("history", "general", "--after", "0", "--json", env=alice.env)  # 0 is a time
    assert r.code == 0, r.err


def test_react_turns_shortcodes_into_emoji(cli: Cli, alice: Account, general: int) -> None:
    chat = send(alice, general, "ship it?")
    r = cli("react", str(chat["id"]), ":+1:", "--json", env=alice.env)
    assert r.code == 0, r.err
    assert json.loads(r.out)["reactions"] == {"👍": 1}


def test_global_flags_before_or_after_the_command(cli: Cli, alice: Account, general: int) -> None:
    env = {"CONCORD_TOKEN": alice.token}
    r = cli("-s", alice.url, "send", "general", "hi", env=env)
    assert r.code == 0, r.err
    r = cli("--json", "-s", alice.url, "whoami", env=env)
    assert r.code == 0 and json.loads(r.out)["username"] == alice.name
    r = cli("whoami", "--debug", "-s", alice.url, env=env)
    assert r.code == 0 and r.out.startswith(alice.name)
    r = cli("--jq", ".username", "--server", alice.url, "whoami", env=env)
    assert r.out.strip() == alice.name
    r = cli("--timeout", "5", "-s", alice.url, "channels", "list", env=env)
    assert r.code == 0 and "#general" in r.out


def test_server_text_is_filtered_before_it_reaches_a_terminal(
    cli: Cli, admin: Account, general: int
) -> None:
    evil = "rel\x1b]0;owned\x07eases"
    r = cli("channels", "create", evil, env=admin.env)
    assert r.code == 0, r.err
    assert "\x1b" not in r.err and "\x07" not in r.err
    r = cli("send", "relxeases", "hi", env=admin.env)  # a near miss: "did you mean"
    assert r.code == 4
    assert "\x1b" not in r.err and "\x07" not in r.err and "\ufffd" in r.err
    r = cli("channels", env=admin.env)
    assert "\x1b" not in r.out and "\ufffd" in r.out
    r = cli("channels", "--json", env=admin.env)
    assert "\\u001b" in r.out  # --json stays exact: JSON escapes it
