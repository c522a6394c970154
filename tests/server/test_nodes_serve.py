"""``concordctl serve`` as an operator meets it: fail before creating anything,
recover a lost admin password, ``CONCORD_DB``, status lines on stderr, ``--quiet``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets.sync.client
from tlscerts import make_certificates

from tests.helpers.timing import UNIT, wait_until
from tests.server.test_serve import Served


def _serve(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "concordctl", "serve", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60 * UNIT,
        env={**os.environ, **(env or {})},
    )


def _login(url: str, password: str) -> int:
    return httpx.post(
        f"{url}/api/tokens", json={"username": "admin", "password": password}
    ).status_code


def test_a_busy_port_fails_before_the_database_and_the_admin_exist(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve("--port", str(port), "--db", str(db))
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "password" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no database, no key: the next start seeds afresh


def test_a_bad_tls_certificate_fails_before_the_database_exists(tmp_path: Path) -> None:
    _, cert, _ = make_certificates(tmp_path)
    bad_key = tmp_path / "not-a-key.pem"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    db = tmp_path / "tls.db"
    result = _serve(
        "--port", "0", "--db", str(db), "--tls-cert", str(cert), "--tls-key", str(bad_key)
    )
    assert result.returncode == 2, result.stderr
    assert "--tls-cert" in result.stderr and "cannot be used" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not db.exists()
    missing = _serve(
        "--port",
        "0",
        "--db",
        str(db),
        "--tls-cert",
        str(tmp_path / "nope.pem"),
        "--tls-key",
        str(bad_key),
    )
    assert missing.returncode == 2 and "cannot be used" in missing.stderr
    assert not db.exists()


def test_db_in_a_missing_or_unwritable_directory_is_refused_and_nothing_is_made(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    result = _serve("--port", "0", "--db", str(missing))
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr and "create it first" in result.stderr
    assert not (tmp_path / "no").exists()  # no parent directories are created
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere: the permission half cannot fail here")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = _serve("--port", "0", "--db", str(locked / "x.db"))
        assert result.returncode == 2, result.stderr
        assert "not writable" in result.stderr
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_concord_db_environment_and_status_lines_on_stderr(tmp_path: Path) -> None:
    db = tmp_path / "env.db"
    served = Served(env={"CONCORD_DB": str(db)})
    try:
        assert db.exists()  # the database named by CONCORD_DB, not the default one
        assert served.stdout == []  # stdout is for what scripts capture, not status
        assert any("created user admin with password:" in x for x in served.stderr)
        assert any(f"database: {db}" in x for x in served.stderr)
    finally:
        assert served.stop() == 0
    wait_until(lambda: any("server stopped" in x for x in served.stderr), 5 * UNIT)
    assert served.stdout == []


def test_quiet_silences_request_and_websocket_lines(tmp_path: Path) -> None:
    served = Served("--db", ":memory:", "--quiet", "--admin-password-stdin", stdin="pw-quiet\n")
    try:
        token = httpx.post(
            f"{served.url}/api/tokens", json={"username": "admin", "password": "pw-quiet"}
        ).json()["token"]
        ws_url = f"{served.url.replace('http', 'ws')}/client?token={token}"
        for _ in range(3):
            with websockets.sync.client.connect(ws_url) as ws:
                ws.send('{"type": "nonsense"}')
        noisy = Served("--db", ":memory:", "--admin-password-stdin", stdin="pw-loud\n")
        try:
            token2 = httpx.post(
                f"{noisy.url}/api/tokens", json={"username": "admin", "password": "pw-loud"}
            ).json()["token"]
            with websockets.sync.client.connect(
                f"{noisy.url.replace('http', 'ws')}/client?token={token2}"
            ):
                pass
            # The control: without --quiet the same traffic does log websocket lines.
            wait_until(lambda: any('"WS /client' in x for x in noisy.stderr), 5 * UNIT)
        finally:
            assert noisy.stop() == 0
    finally:
        assert served.stop() == 0
    lines = [x for x in served.stderr if not x.startswith("concordctl: ")]
    assert lines == [], lines


def test_reset_admin_password_prints_a_new_one_once_and_retires_the_old(tmp_path: Path) -> None:
    db = tmp_path / "reset.db"
    first = _serve("--db", str(db), "--reset-admin-password")
    assert first.returncode == 2 and "start the server once" in first.stderr
    assert not db.exists()
    served = Served("--db", str(db), "--admin-password-stdin", stdin="old-password\n")
    try:
        old_token = httpx.post(
            f"{served.url}/api/tokens", json={"username": "admin", "password": "old-password"}
        ).json()["token"]
        issued = int(time.time())
        # Token times are whole seconds: a reset in the same second cannot tell them apart.
        wait_until(lambda: int(time.time()) > issued, 2 * UNIT, "the next second")
        result = _serve("--db", str(db), "--reset-admin-password")
        assert result.returncode == 0, result.stderr
        new_password = result.stdout.strip()
        assert len(new_password) >= 16 and "\n" not in new_password
        assert new_password not in result.stderr and "shown only this once" in result.stderr
        assert _login(served.url, "old-password") == 400
        assert _login(served.url, new_password) == 200
        me = httpx.get(f"{served.url}/api/self", headers={"Authorization": f"Bearer {old_token}"})
        assert me.status_code == 401  # sessions of the lost password end too
        chosen = _serve(
            "--db",
            str(db),
            "--reset-admin-password",
            "--admin-password-stdin",
            stdin="chosen-password\n",
        )
        assert chosen.returncode == 0, chosen.stderr
        assert chosen.stdout == "" and "chosen-password" not in chosen.stderr
        assert _login(served.url, new_password) == 400
        assert _login(served.url, "chosen-password") == 200
    finally:
        assert served.stop() == 0
    memory = _serve("--db", ":memory:", "--reset-admin-password")
    assert memory.returncode == 2 and "kept" in memory.stderr


@pytest.mark.parametrize("value", ["many", "-1", "1024"])
def test_node_id_must_be_auto_or_a_small_number(value: str) -> None:
    result = _serve("--db", ":memory:", "--node-id", value)
    assert result.returncode == 2 and "--node-id" in result.stderr
    assert "Traceback" not in result.stderr
