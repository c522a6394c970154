"""Every one-shot command through the real entry point against the embedded server."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import respx

from concordctl.server import ServerThread
from tests.cli.conftest import Account, Result, send
from tests.helpers import admin_http

Cli = Callable[..., Result]


# --------------------------------------------------------------------------
# login, logout, whoami, register
# --------------------------------------------------------------------------


def test_login_stores_server_user_and_token_never_the_password(
    cli: Cli, alice: Account, cli_env: Path
) -> None:
    r = cli(
        "login",
        "--server",
        alice.url,
        "--username",
        alice.name,
        "--password-stdin",
        input=alice.password + "\n",
    )
    assert r.code == 0, r.err
    assert r.out == ""  # status goes to stderr
    assert f"as {alice.name}" in r.err
    stored = tomllib.loads(cli_env.read_text())
    profile = stored["profiles"]["default"]
    assert profile["server"] == alice.url and profile["username"] == alice.name
    assert profile["token"].count(".") == 2
    assert alice.password not in cli_env.read_text()
    assert stat.S_IMODE(cli_env.stat().st_mode) == 0o600

    # the profile is enough from now on
    r = cli("whoami")
    assert r.code == 0 and r.out.startswith(f"{alice.name} [{alice.id}] on {alice.url}")

    r = cli("logout")
    assert r.code == 0 and "logged out" in r.err
    assert "token" not in tomllib.loads(cli_env.read_text())["profiles"]["default"]
    r = cli("whoami")
    assert r.code == 3
    assert "concordctl login" in r.err and "CONCORD_TOKEN" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_login_with_environment_password_and_named_profile(
    cli: Cli, alice: Account, cli_env: Path
) -> None:
    env = {"CONCORD_PASSWORD": alice.password, "CONCORD_USERNAME": alice.name}
    r = cli("login", "-s", alice.url, "--profile", "work", env=env)
    assert r.code == 0, r.err
    assert "work" in tomllib.loads(cli_env.read_text())["profiles"]
    assert cli("whoami", "--profile", "work").code == 0
    assert cli("whoami", env={"CONCORD_PROFILE": "work"}).code == 0


def _expired_token() -> str:
    """A JWT whose ``exp`` is long past (the client reads it without verifying)."""
    import base64

    claims = base64.urlsafe_b64encode(json.dumps({"sub": "x", "iat": 0, "exp": 1000}).encode())
    return "eyJhbGciOiJIUzI1NiJ9." + claims.decode().rstrip("=") + ".c2ln"


def test_login_save_password_keeps_it_in_the_0600_file_and_logs_in_again(
    cli: Cli, alice: Account, general: int, cli_env: Path
) -> None:
    from concordctl.config import save_profile

    login = ("login", "-s", alice.url, "-u", alice.name, "--password-stdin")
    r = cli(*login, "--save-password", input=alice.password + "\n")
    assert r.code == 0, r.err
    assert "password is saved" in r.err  # and the cli fixture checks it is not shown
    assert stat.S_IMODE(cli_env.stat().st_mode) == 0o600
    profile = tomllib.loads(cli_env.read_text())["profiles"]["default"]
    assert profile["password"] == alice.password and profile["token"]

    # No token at all: the next command logs in with the saved password
    # (--debug: the cli fixture checks no log line shows it).
    save_profile("default", path=cli_env, token=None)
    r = cli("--debug", "whoami")
    assert r.code == 0, r.err
    assert r.out.startswith(f"{alice.name} [{alice.id}]")
    r = cli("send", str(general), "logged in again")  # the REST-only path too
    assert r.code == 0, r.err
    # An expired token, and one the server rejects: the same.
    for stale in (_expired_token(), "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"):
        save_profile("default", path=cli_env, token=stale)
        r = cli("whoami")
        assert r.code == 0, (stale, r.err)
        r = cli("send", str(general), "again")
        assert r.code == 0, (stale, r.err)
    # ...but never as another user or to another server given explicitly.
    save_profile("default", path=cli_env, token=None)
    r = cli("whoami", env={"CONCORD_USERNAME": "someone-else"})
    assert r.code == 3 and "not logged in" in r.err, r.err  # no login was tried
    # A server written differently is another server to the profile: said so, exit 3.
    other = alice.url.replace("127.0.0.1", "localhost")
    r = cli("whoami", "--server", other)
    assert r.code == 3, r.err
    assert f"not logged in to {other}: profile 'default' is for {alice.url}" in r.err
    # A dead port is unreachable (6), not "not logged in".
    r = cli("whoami", "--server", "http://127.0.0.1:9")
    assert r.code == 6 and "cannot connect to http://127.0.0.1:9" in r.err, r.err

    # logout removes the password with the token.
    r = cli("logout")
    assert r.code == 0 and "saved password" in r.err
    profile = tomllib.loads(cli_env.read_text())["profiles"]["default"]
    assert "password" not in profile and "token" not in profile
    assert alice.password not in cli_env.read_text()
    assert cli("whoami").code == 3


def test_login_without_save_password_removes_a_saved_one(
    cli: Cli, alice: Account, cli_env: Path
) -> None:
    login = ("login", "-s", alice.url, "-u", alice.name, "--password-stdin")
    assert cli(*login, "--save-password", input=alice.password + "\n").code == 0
    assert alice.password in cli_env.read_text()
    r = cli(*login, input=alice.password + "\n")
    assert r.code == 0, r.err
    assert "password" not in r.err
    assert alice.password not in cli_env.read_text()
    assert "password" not in tomllib.loads(cli_env.read_text())["profiles"]["default"]
    assert cli("whoami").code == 0  # the token still is there


def test_login_refuses_bad_credentials_and_missing_password(cli: Cli, alice: Account) -> None:
    r = cli("login", "-s", alice.url, "-u", alice.name, "--password-stdin", input="wrong\n")
    assert r.code == 3
    assert r.err.startswith("concordctl: ") and "Traceback" not in r.err
    r = cli("login", "-s", alice.url, "-u", alice.name)  # stdin is not a terminal
    assert r.code == 2 and "--password-stdin" in r.err
    r = cli("login", "-u", alice.name, "--password-stdin", input="x\n")
    assert r.code == 2 and "--server" in r.err
    r = cli("login", "--password", "x")  # a password is never a flag
    assert r.code == 2


def test_whoami_json_is_the_servers_json(cli: Cli, alice: Account) -> None:
    r = cli("whoami", "--json", env=alice.env)
    assert r.code == 0
    with alice.http() as http:
        assert r.out == http.get("/api/self").text + "\n"


def test_register_then_login(cli: Cli, server_thread: ServerThread, secrets: object) -> None:
    env = {"CONCORD_SERVER": server_thread.url}
    r = cli("register", "--username", "carol", "--password-stdin", input="pw-carol-1\n", env=env)
    assert r.code == 0, r.err
    assert r.out.startswith("registered carol [")
    r = cli("register", "-u", "dave", "--json", "--password-stdin", input="pw-dave-1\n", env=env)
    assert r.code == 0
    assert list(json.loads(r.out)) == ["id", "username"]
    r = cli("register", "-u", "dave", "--password-stdin", input="again-1\n", env=env)
    assert r.code == 2, r.err  # 400: the name is taken
    r = cli("login", "-u", "carol", "--password-stdin", input="pw-carol-1\n", env=env)
    assert r.code == 0


# --------------------------------------------------------------------------
# exit codes for the ordinary failures
# --------------------------------------------------------------------------


def test_no_credentials_at_all(cli: Cli, server_thread: ServerThread) -> None:
    r = cli("whoami", env={"CONCORD_SERVER": server_thread.url})
    assert r.code == 3
    assert "concordctl login" in r.err and "CONCORD_TOKEN" in r.err
    r = cli("whoami")  # no server either: still "not logged in", exit 3
    assert r.code == 3 and "concordctl login --server URL" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_expired_or_bogus_token(cli: Cli, server_thread: ServerThread) -> None:
    bogus = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    r = cli("whoami", env={"CONCORD_SERVER": server_thread.url, "CONCORD_TOKEN": bogus})
    assert r.code == 3
    assert bogus not in r.out + r.err


def test_server_down_is_exit_6(cli: Cli) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"CONCORD_SERVER": f"http://127.0.0.1:{port}", "CONCORD_TOKEN": "t.t.t"}
    r = cli("send", "1", "hi", env=env)
    assert r.code == 6, r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err


def test_server_error_is_exit_7(cli: Cli) -> None:
    env = {"CONCORD_SERVER": "http://concord.test", "CONCORD_TOKEN": "a.b.c"}
    with respx.mock(assert_all_mocked=True) as router:
        router.post("http://concord.test/api/channels/5/chats").mock(
            return_value=httpx.Response(500, json={"path": "/", "status": 500, "error": "boom"})
        )
        r = cli("send", "5", "hi", env=env)
    assert r.code == 7, r.err
    assert "500" in r.err and len(r.err.strip().splitlines()) == 1


def test_proxy_502_on_send_is_exit_7_and_not_repeated(cli: Cli) -> None:
    env = {"CONCORD_SERVER": "http://concord.test", "CONCORD_TOKEN": "a.b.c"}
    with respx.mock(assert_all_mocked=True) as router:
        route = router.post("http://concord.test/api/channels/5/chats").mock(
            return_value=httpx.Response(502, text="<html>bad gateway</html>")
        )
        assert cli("send", "5", "hi", env=env).code == 7
    assert route.call_count == 1  # a chat is never sent twice blindly


def test_debug_shows_the_traceback(cli: Cli, alice: Account) -> None:
    r = cli("edit", "12345", "x", env=alice.env)
    assert r.code == 4 and "Traceback" not in r.err
    r = cli("--debug", "edit", "12345", "x", env=alice.env)
    assert r.code == 4 and "Traceback" in r.err


def test_usage_errors_are_exit_2(cli: Cli, alice: Account) -> None:
    assert cli("send").code == 2
    assert cli("send", "general", "x", "--no-such-flag").code == 2
    assert cli("history", "general", "--limit", "0", env=alice.env).code == 2
    assert cli("no-such-command").code == 2
    r = cli("search", "--before", "yesterday-ish", env=alice.env)
    assert r.code == 2 and "--before" in r.err
    r = cli("tail", "--match", "(", env=alice.env)
    assert r.code == 2 and "regular expression" in r.err
    r = cli("wait", "general", "--match", "[", env=alice.env)
    assert r.code == 2
    r = cli("wait", "general", env=alice.env)
    assert r.code == 2 and "--match" in r.err
    r = cli("wait", "general", "--reaction", "✅", env=alice.env)
    assert r.code == 2 and "--on" in r.err
    r = cli("demo", "--pace", "-1")
    assert r.code == 2 and "--pace" in r.err


def test_version_is_answered_before_the_wire_models_or_typer_are_imported() -> None:
    # issue 13 §4: `--version` at most 4x `python -c pass`; msgspec (under
    # concordctl.protocol) and Typer were most of what it paid.
    heavy = ("msgspec", "typer", "httpx", "concordctl.protocol", "concordctl.errors")
    code = (
        "import sys\n"
        "from concordctl.cli import main\n"
        "sys.argv = ['concordctl', '--version']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        f"print([m for m in {heavy!r} if m in sys.modules], file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("concordctl ")
    assert proc.stderr.strip() == "[]"


def test_version_and_help_for_every_command(cli: Cli) -> None:
    r = cli("--version")
    assert r.code == 0 and r.out.startswith("concordctl ")
    root = cli("--help")
    assert root.code == 0
    commands = [
        "login", "logout", "whoami", "register", "channels", "users", "send", "edit",
        "delete", "react", "typing", "history", "search", "tail", "wait", "demo",
    ]  # fmt: skip
    for name in commands:
        assert name in root.out, name
        r = cli(name, "--help")
        assert r.code == 0, name
        assert "Example" in r.out and "concordctl " + name in r.out, name


_TYPE_PLACEHOLDER = re.compile(r"<[a-z][\w\[\], |]*>")  # <str>, <int range>, <list[str]>


def _command_paths() -> list[list[str]]:
    import typer.main

    from concordctl.cli import app as cli_app

    cli_app._register_commands(None)  # every command module, as a TAB would

    def walk(command: object, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            if not sub.hidden:
                yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(cli_app.app), []))


def test_no_help_shows_a_type_placeholder(cli: Cli) -> None:
    # issue 13 §2: `--port <int>`, `CHANNEL <str>`, `<int range>` in help are
    # noise; each option and argument names what to write (PORT, CHANNEL).
    paths = _command_paths()
    assert ["serve"] in paths and ["channels", "create"] in paths and ["bot", "new"] in paths
    for path in paths:
        r = cli(*path, "--help")
        assert r.code == 0, (path, r.err)
        assert "Usage: concordctl" in r.out, path
        shown = [line.strip() for line in r.out.splitlines() if _TYPE_PLACEHOLDER.search(line)]
        assert shown == [], f"concordctl {' '.join(path)} --help: {shown}"


# --------------------------------------------------------------------------
# channels and users
# --------------------------------------------------------------------------


def test_channels_tree_and_json(
    cli: Cli, alice: Account, general: int, admin_password: str
) -> None:
    with admin_http(alice.url, admin_password) as http:
        ops = http.post("/api/channels", json={"name": "ops"}).json()
        http.post("/api/channels", json={"name": "alerts", "parentChannelId": ops["id"]})
        raw = http.get("/api/channels").text
    r = cli("channels", env=alice.env)
    assert r.code == 0
    lines = r.lines()
    assert lines[0] == f"channels on {alice.url}"
    assert any(line.startswith("├── #general") for line in lines)
    alerts = next(i for i, line in enumerate(lines) if "#alerts" in line)
    assert "#ops" in lines[alerts - 1]
    assert lines[alerts].index("#alerts") > lines[alerts - 1].index("#ops")  # nested
    r = cli("channels", "--json", env=alice.env)
    assert r.out == raw + "\n"


def test_users_table_and_json(cli: Cli, alice: Account, bob: Account) -> None:
    r = cli("users", env=alice.env)
    assert r.code == 0
    header, *rows = r.lines()
    assert header.split() == ["status", "username", "nickname", "id"]
    assert any(alice.name in row and "offline" in row and str(alice.id) in row for row in rows)
    with alice.http() as http:
        raw = http.get("/api/users").text
    assert cli("users", "--json", env=alice.env).out == raw + "\n"


# --------------------------------------------------------------------------
# send, edit, delete, react, typing
# --------------------------------------------------------------------------


def test_send_by_name_hash_name_and_id(cli: Cli, alice: Account, general: int) -> None:
    ids = []
    for ref in ("general", "#general", str(general)):
        r = cli("send", ref, f"via {ref}", env=alice.env)
        assert r.code == 0, r.err
        ids.append(int(r.out))
    with alice.http() as http:
        contents = [http.get(f"/api/chats/{i}").json()["content"] for i in ids]
    assert contents == ["via general", "via #general", f"via {general}"]


def test_send_json_is_the_servers_chat(cli: Cli, alice: Account, general: int) -> None:
    r = cli("send", "general", "json please", "--json", env=alice.env)
    chat = json.loads(r.out)
    with alice.http() as http:
        assert r.out == http.get(f"/api/chats/{chat['id']}").text + "\n"
    assert chat["authorId"] == alice.id and chat["channelId"] == general


def test_send_reads_stdin_as_one_chat(cli: Cli, alice: Account) -> None:
    r = cli("send", "general", input="line one\nline two\n\nline four\n", env=alice.env)
    assert r.code == 0
    r2 = cli("send", "general", "-", "--json", input="dash\n", env=alice.env)
    with alice.http() as http:
        assert http.get(f"/api/chats/{int(r.out)}").json()["content"] == (
            "line one\nline two\n\nline four"
        )
    assert json.loads(r2.out)["content"] == "dash"
    assert cli("send", "general", input="", env=alice.env).code == 2


def test_send_in_a_thread(cli: Cli, alice: Account, general: int) -> None:
    root = send(alice, general, "thread root")
    r = cli("send", "general", "in thread", "--thread", str(root["id"]), "--json", env=alice.env)
    assert json.loads(r.out)["threadId"] == root["id"]


def test_unknown_channel_lists_close_names(cli: Cli, alice: Account) -> None:
    r = cli("send", "genral", "x", env=alice.env)
    assert r.code == 4
    assert "general" in r.err and len(r.err.strip().splitlines()) == 1
    assert cli("history", "#nope-nothing-like-it", env=alice.env).code == 4


def test_edit_delete_and_their_failures(cli: Cli, alice: Account, bob: Account) -> None:
    chat_id = int(cli("send", "general", "first", env=alice.env).out)
    r = cli("edit", str(chat_id), "second", env=alice.env)
    assert r.code == 0 and r.out == "" and f"edited chat {chat_id}" in r.err
    r = cli("edit", str(chat_id), "third", "--json", env=alice.env)
    edited = json.loads(r.out)
    assert edited["content"] == "third" and edited["edited"] is True
    r = cli("edit", str(chat_id), "mine now", env=bob.env)
    assert r.code == 5, r.err  # not your chat
    assert cli("delete", str(chat_id), env=bob.env).code == 5
    assert cli("edit", "424242", "x", env=alice.env).code == 4
    r = cli("delete", str(chat_id), env=alice.env)
    assert r.code == 0 and f"deleted chat {chat_id}" in r.err
    assert cli("delete", str(chat_id), env=alice.env).code == 4


def test_react_and_remove(cli: Cli, alice: Account, bob: Account, general: int) -> None:
    chat = send(alice, general, "react to me")
    assert cli("react", str(chat["id"]), "✔️", env=bob.env).code == 0
    r = cli("react", str(chat["id"]), "👩‍💻", "--json", env=alice.env)
    assert json.loads(r.out) == {
        "reactingUsers": {"✔️": [bob.id], "👩‍💻": [alice.id]},
        "reactions": {"✔️": 1, "👩‍💻": 1},
    }
    r = cli("react", str(chat["id"]), "✔️", "--remove", env=bob.env)
    assert r.code == 0 and "removed" in r.err
    with alice.http() as http:
        assert http.get(f"/api/chats/{chat['id']}/reactions").json()["reactions"] == {"👩‍💻": 1}
    assert cli("react", "999999", "x", env=alice.env).code == 4


def test_typing(cli: Cli, alice: Account) -> None:
    assert cli("typing", "general", env=alice.env).code == 0
    assert cli("typing", "nowhere-at-all", env=alice.env).code == 4


# --------------------------------------------------------------------------
# send --key
# --------------------------------------------------------------------------


def test_send_with_a_key_twice_edits_the_same_chat(
    cli: Cli, alice: Account, bob: Account, general: int
) -> None:
    first = cli("send", "general", "release v1: building", "--key", "rel-v1", env=alice.env)
    assert first.code == 0
    send(alice, general, "something else in between")
    # a retried job: a new process, no local state, same key
    again = cli("send", "general", "release v1: shipped", "--key", "rel-v1", env=alice.env)
    assert again.code == 0 and again.out == first.out
    assert "edited" in again.err
    same = cli("send", "general", "release v1: shipped", "--key", "rel-v1", env=alice.env)
    assert same.out == first.out and "up to date" in same.err
    with alice.http() as http:
        mine = http.get("/api/chats", params={"authorId": alice.id}).json()
        chat = http.get(f"/api/chats/{int(first.out)}").json()
    assert [c["id"] for c in mine if "release v1" in c["content"]] == [int(first.out)]
    assert chat["content"] == "release v1: shipped\n🔑 rel-v1" and chat["edited"]
    # another key, or another user with the same key: a new chat each
    other = cli("send", "general", "release v2", "--key", "rel-v2", env=alice.env)
    assert other.out != first.out
    bobs = cli("send", "general", "bob's", "--key", "rel-v1", env=bob.env)
    assert bobs.out not in (first.out, other.out)
    assert cli("send", "general", "x", "--key", "has space", env=alice.env).code == 2


# --------------------------------------------------------------------------
# history and search
# --------------------------------------------------------------------------


def test_history_pages_past_one_request(cli: Cli, alice: Account, general: int) -> None:
    with alice.http() as http:
        sent = [
            http.post(f"/api/channels/{general}/chats", json={"content": f"n{i}"}).json()["id"]
            for i in range(110)
        ]
    r = cli("history", "general", "--limit", "105", env=alice.env)
    assert r.code == 0
    lines = r.lines()
    assert len(lines) == 105
    assert lines[-1].endswith(f"[{sent[-1]}]") and f": n5  [{sent[5]}]" in lines[0]
    assert (
        cli("history", "general", "--limit", "1000", env=alice.env).lines()
        == cli("history", "general", "--limit", "110", env=alice.env).lines()
    )
    assert all(f"#general {alice.name}: n" in line for line in lines)
    r = cli("history", str(general), "-n", "3", "--json", env=alice.env)
    assert [c["id"] for c in json.loads(r.out)] == sent[-1:-4:-1]  # the server's order


def test_history_marks_edits_and_reactions(cli: Cli, alice: Account, general: int) -> None:
    chat = send(alice, general, "to be changed")
    with alice.http() as http:
        http.patch(f"/api/chats/{chat['id']}", json={"content": "changed"})
        http.post(f"/api/chats/{chat['id']}/reactions", json={"reaction": "🎉", "adding": True})
    line = cli("history", "general", "-n", "1", env=alice.env).out
    assert "changed ✎ (edited)" in line and "☺ 🎉 1" in line


def test_search_filters(cli: Cli, alice: Account, bob: Account, general: int) -> None:
    old = send(alice, general, "deploy old", sentAt=1_000_000_000_000)
    new = send(alice, general, "deploy new")
    send(bob, general, "deploy by bob")
    r = cli("search", "deploy", "--author", alice.name, "--after", "1h", "--json", env=alice.env)
    assert [c["id"] for c in json.loads(r.out)] == [new["id"]]
    r = cli("search", "deploy", "--before", "2010-01-01T00:00:00Z", "--json", env=alice.env)
    assert [c["id"] for c in json.loads(r.out)] == [old["id"]]
    r = cli("search", "deploy", "--channel", "#general", "-n", "2", env=alice.env)
    assert len(r.lines()) == 2 and "deploy by bob" in r.lines()[-1]
    r = cli("search", "nothing-matches-this", env=alice.env)
    assert r.code == 0 and r.out == "" and "no chats" in r.err
    assert cli("search", "--author", "nobody-such", env=alice.env).code == 4
