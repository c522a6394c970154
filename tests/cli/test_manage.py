"""Channels, users, accounts and profiles through the real entry point, on the embedded server."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import respx

from concordctl.server import ServerConfig
from tests.cli.conftest import Account, Result, Secrets

Cli = Callable[..., Result]


@pytest.fixture
def server_config(server_config: ServerConfig) -> ServerConfig:
    # Channel management is admin-only here, as on a real server (the suite's
    # default server lets every test user make channels).
    return dataclasses.replace(server_config, open_channels=False)


def _channel_names(account: Account) -> dict[str, dict[str, object]]:
    with account.http() as http:
        out: dict[str, dict[str, object]] = {}

        def walk(nodes: list[dict[str, object]]) -> None:
            for node in nodes:
                out[str(node["name"])] = node
                walk(node["children"])  # type: ignore[arg-type]

        walk(http.get("/api/channels").json())
        return out


def test_channels_create_list_and_delete(cli: Cli, admin: Account) -> None:
    r = cli("channels", "create", "releases", "--description", "release notes", env=admin.env)
    assert r.code == 0, r.err
    cid = int(r.out.strip())
    assert "created #releases" in r.err
    made = _channel_names(admin)["releases"]
    assert made["id"] == cid and made["description"] == "release notes"

    r = cli("channels", "create", "#nightly", "--parent", "releases", "--json", env=admin.env)
    assert r.code == 0, r.err
    nightly = json.loads(r.out)
    assert nightly["name"] == "nightly" and nightly["parentChannelId"] == cid

    # the bare group lists, with every --json flag, and --jq filters
    r = cli("channels", env=admin.env)
    assert r.code == 0 and "#releases" in r.out and "#nightly" in r.out
    r = cli("channels", "--jq", ".[].name", env=admin.env)
    assert r.code == 0, r.err
    assert set(r.lines()) == {"general", "releases"}  # top level only: nightly is a child
    # a snowflake through jq (whose numbers are doubles) comes out as the very id
    r = cli("channels", "--jq", '.[] | select(.name == "releases") | .id', env=admin.env)
    assert r.code == 0 and r.lines() == [str(cid)], (r.out, r.err)

    # delete refuses without --yes when stdin is not a terminal...
    r = cli("channels", "delete", "nightly", env=admin.env)
    assert r.code == 2 and "without --yes" in r.err
    assert "nightly" in _channel_names(admin)
    r = cli("channels", "delete", "nightly", "--yes", env=admin.env)
    assert r.code == 0 and "deleted #nightly" in r.err
    assert "nightly" not in _channel_names(admin)
    # ...and an unknown one is not found, with close names
    r = cli("channels", "delete", "relases", "--yes", env=admin.env)
    assert r.code == 4 and "did you mean" in r.err and "releases" in r.err


def test_channels_edit_and_users_promote(cli: Cli, admin: Account, alice: Account) -> None:
    assert cli("channels", "create", "releases", env=admin.env).code == 0
    r = cli("channels", "edit", "releases", "--name", "shipped",
            "--description", "what went out", env=admin.env)  # fmt: skip
    assert r.code == 0, r.err
    assert "edited #shipped" in r.err
    made = _channel_names(admin)
    assert "releases" not in made and made["shipped"]["description"] == "what went out"
    r = cli("channels", "edit", "general", env=admin.env)
    assert r.code == 2 and "nothing to change" in r.err

    # alice is no admin: forbidden, one line; once promoted she may
    r = cli("channels", "create", "mine", env=alice.env)
    assert r.code == 5, r.err
    assert "only an admin may" in r.err and len(r.err.strip().splitlines()) == 1
    r = cli("users", "promote", alice.name, env=alice.env)
    assert r.code == 5, r.err
    r = cli("users", "promote", alice.name, env=admin.env)
    assert r.code == 0, r.err
    assert f"{alice.name} [{alice.id}] is an admin" in r.err
    assert cli("channels", "create", "mine", env=alice.env).code == 0
    r = cli("users", "promote", "nobody-by-that-name", env=admin.env)
    assert r.code == 4, r.err


def test_forbidden_is_exit_5_in_one_line(cli: Cli, alice: Account) -> None:
    with respx.mock(base_url=alice.url, assert_all_called=False) as mock:
        mock.route(method="POST", path="/api/channels").respond(
            403,
            json={"status": 403, "error": "Forbidden", "path": "/api/channels",
                  "message": "only an admin may create channels"},
        )  # fmt: skip
        r = cli("channels", "create", "mine", env=alice.env)
    assert r.code == 5, r.err
    assert "only an admin may create channels" in r.err
    assert len(r.err.strip().splitlines()) == 1 and "((" not in r.err


def test_users_list_and_jq(cli: Cli, alice: Account, bob: Account) -> None:
    r = cli("users", "--jq", ".[].username", env=alice.env)
    assert r.code == 0, r.err
    assert {alice.name, bob.name, "admin"} <= set(r.lines())
    r = cli("users", "--jq", ".[", env=alice.env)
    assert r.code == 2 and "--jq: cannot compile" in r.err


def _login(cli: Cli, account: Account, *extra: str) -> Result:
    return cli("login", "-s", account.url, "-u", account.name, "--password-stdin", *extra,
               input=account.password + "\n")  # fmt: skip


def test_auth_status_token_and_logout_drop_sessions(
    cli: Cli, alice: Account, cli_env: Path, secrets: Secrets
) -> None:
    r = cli("auth", "status")
    assert r.code == 3 and "not logged in" in r.err
    assert _login(cli, alice).code == 0
    r = cli("auth", "status", "--json")
    assert r.code == 0, r.err
    status = json.loads(r.out)
    assert status["loggedIn"] and status["username"] == alice.name
    assert status["server"] == alice.url and status["profile"] == "default"
    assert status["expiresAt"] > 0 and status["passwordSaved"] is False
    r = cli("auth", "status")
    assert r.code == 0 and f"user:             {alice.name}" in r.out

    token = tomllib.loads(cli_env.read_text())["profiles"]["default"]["token"]
    # Printing the token is what `auth token` is for (a login in the same second
    # as the fixture's may issue the very same JWT): not a leak here.
    secrets.values[:] = [s for s in secrets.values if s not in (token, alice.token)]
    r = cli("auth", "token")
    assert r.code == 0 and r.out.strip() == token

    # logout: the server drops every session (DELETE /api/tokens), the profile forgets
    r = cli("logout")
    assert r.code == 0, r.err
    assert "your sessions on the server are closed" in r.err
    assert "token" not in tomllib.loads(cli_env.read_text())["profiles"]["default"]
    gone = httpx.get(f"{alice.url}/api/self", headers={"Authorization": f"Bearer {token}"})
    assert gone.status_code == 401
    r = cli("auth", "status")
    assert r.code == 3


def test_logout_on_a_server_that_cannot_drop_sessions(cli: Cli, alice: Account) -> None:
    # Upstream Concord has no DELETE /api/tokens (405): said so, token still forgotten.
    assert _login(cli, alice).code == 0
    with respx.mock(base_url=alice.url, assert_all_called=False) as mock:
        revoke = mock.route(method="DELETE", path="/api/tokens").respond(405)
        r = cli("logout")
    assert r.code == 0 and revoke.called
    assert "this server cannot drop sessions" in r.err


def test_passwd_changes_the_password_and_refreshes_the_profile(
    cli: Cli, alice: Account, cli_env: Path, secrets: Secrets
) -> None:
    assert _login(cli, alice).code == 0
    new = "new-" + alice.password
    secrets.values.append(new)
    r = cli("passwd", "--password-stdin", input=new + "\n")
    assert r.code == 0, r.err
    assert "password changed" in r.err
    ok = httpx.post(f"{alice.url}/api/tokens", json={"username": alice.name, "password": new})
    assert ok.status_code == 200
    assert cli("whoami").code == 0  # the profile's token still (or newly) works
    r = cli("passwd")
    assert r.code == 2 and "--password-stdin" in r.err


def test_profiles_list_use_delete_and_unknown_profile(
    cli: Cli, alice: Account, bob: Account, cli_env: Path
) -> None:
    r = cli("profiles")
    assert r.code == 0 and "no profiles yet" in r.err
    assert _login(cli, alice, "--profile", "work").code == 0
    assert _login(cli, bob, "--profile", "home").code == 0
    r = cli("profiles")
    assert r.code == 0, r.err
    assert r.lines() == [f"  home  {bob.name} on {bob.url}", f"* work  {alice.name} on {alice.url}"]
    r = cli("profiles", "use", "home")
    assert r.code == 0
    assert cli("whoami").out.startswith(bob.name)
    r = cli("profiles", "--json", "--jq", ".[] | select(.default).name")
    assert r.out.strip() == "home"

    r = cli("whoami", "--profile", "nosuch")
    assert r.code == 4, r.err
    assert "no profile named 'nosuch'" in r.err and "home, work" in r.err
    r = cli("profiles", "delete", "work")
    assert r.code == 0
    r = cli("profiles", "use", "work")
    assert r.code == 4 and "the profiles are: home" in r.err


def test_login_saves_ca_cert_and_insecure_in_the_profile(
    cli: Cli, alice: Account, cli_env: Path, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    r = _login(cli, alice, "--ca-cert", str(ca))
    assert r.code == 0, r.err
    profile = tomllib.loads(cli_env.read_text())["profiles"]["default"]
    assert profile["ca_cert"] == str(ca.resolve())
    r = _login(cli, alice, "--insecure")
    assert r.code == 0, r.err
    assert tomllib.loads(cli_env.read_text())["profiles"]["default"]["insecure"] is True


def test_bot_new_writes_a_bot_whose_test_passes(cli: Cli, tmp_path: Path) -> None:
    import subprocess
    import sys

    r = cli("bot", "new", "greeter", "--dir", str(tmp_path))
    assert r.code == 0, r.err
    assert (tmp_path / "greeter.py").is_file() and (tmp_path / "test_greeter.py").is_file()
    r = cli("bot", "new", "greeter", "--dir", str(tmp_path))
    assert r.code == 2 and "already exists" in r.err
    assert cli("bot", "new", "not-a-module").code == 2
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_greeter.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
