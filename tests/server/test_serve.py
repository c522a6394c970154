"""``concordctl serve`` as a subprocess, and TLS on the embedded server."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import websockets
import websockets.sync.client
from tlscerts import make_certificates

from concordctl.cli.serve import exposure_warning, is_loopback
from concordctl.server import EmbeddedServer, ServerConfig
from tests.server.helpers import login


class Served:
    """A running ``concordctl serve`` whose output lines are collected."""

    def __init__(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "concordctl", "serve", "--port", "0", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdin is not None
        if stdin is not None:
            self.proc.stdin.write(stdin)
        self.proc.stdin.close()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._ready = threading.Event()
        threading.Thread(
            target=self._read, args=(self.proc.stdout, self.stdout), daemon=True
        ).start()
        threading.Thread(
            target=self._read, args=(self.proc.stderr, self.stderr), daemon=True
        ).start()
        assert self._ready.wait(30), "".join(self.stderr)
        line = next(x for x in self.stderr if "serving on" in x)
        self.url = line.split("serving on ", 1)[1].split()[0]

    def _read(self, stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line)
            if "serving on" in line:
                self._ready.set()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def test_serve_prints_password_once_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    first = Served("--db", str(db))
    with contextlib.ExitStack() as stack:
        stack.callback(first.stop)
        password_lines = [x for x in first.stderr if "password:" in x]
        assert len(password_lines) == 1
        password = password_lines[0].rsplit(" ", 1)[1].strip()
        token = httpx.post(
            f"{first.url}/api/tokens", json={"username": "admin", "password": password}
        ).json()["token"]
        me = httpx.get(f"{first.url}/api/self", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200
        ws_url = f"{first.url.replace('http', 'ws')}/client?token={token}"
        with websockets.sync.client.connect(ws_url) as ws:
            stack.pop_all()
            assert first.stop() == 0, "".join(first.stderr)
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    ws.recv(timeout=10)
            assert ws.close_code == 1001  # clients are told the server is going away
    log = "".join(x for x in first.stderr if "password:" not in x)
    assert "/client?token=***" in log and token not in log and password not in log
    assert '"POST /api/tokens" 200' in log
    second = Served("--db", str(db))
    try:
        assert not any("password:" in x for x in second.stderr)
        assert (
            httpx.post(
                f"{second.url}/api/tokens", json={"username": "admin", "password": password}
            ).status_code
            == 200
        )
    finally:
        assert second.stop() == 0


def test_serve_admin_password_from_stdin_and_sigint() -> None:
    served = Served("--db", ":memory:", "--admin-password-stdin", "--quiet", stdin="s3cret-pw\n")
    try:
        assert not any("s3cret-pw" in x for x in served.stdout + served.stderr)
        response = httpx.post(
            f"{served.url}/api/tokens", json={"username": "admin", "password": "s3cret-pw"}
        )
        assert response.status_code == 200
    finally:
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(timeout=30) == 0


def test_serve_rejects_bad_flags() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "concordctl", "serve", "--tls-cert", "x.pem", "--db", ":memory:"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "--tls-key" in result.stderr


def test_exposure_warning() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert (
        not is_loopback("0.0.0.0")
        and not is_loopback("192.168.1.5")
        and not is_loopback("example.com")
    )
    text = exposure_warning("0.0.0.0", 8080, tls=False)
    assert "0.0.0.0:8080" in text and "clear text" in text and "register" in text


async def test_tls_https_and_wss(tmp_path: Path, admin_password: str) -> None:
    ca, cert, key = make_certificates(tmp_path)
    config = ServerConfig(
        admin_password=admin_password, ssl_certfile=str(cert), ssl_keyfile=str(key)
    )
    context = ssl.create_default_context(cafile=str(ca))
    async with EmbeddedServer(config) as server:
        assert server.url.startswith("https://") and server.ws_url.startswith("wss://")
        async with httpx.AsyncClient(base_url=server.url, verify=context) as http:
            admin = await login(http, "admin", admin_password)
            async with websockets.connect(
                f"{server.ws_url}?token={admin.token}", ssl=context
            ) as ws:
                await server.broadcast_raw('{"type": "hello"}')
                assert await ws.recv() == '{"type": "hello"}'
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(base_url=server.url) as untrusting:
                await untrusting.get("/api/server")


def test_serve_on_a_busy_port_is_a_usage_error() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "concordctl", "serve", "--port", str(port), "--db", ":memory:"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
