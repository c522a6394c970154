"""TLS end to end: the embedded server behind a self-signed certificate on
127.0.0.1 (made here with ``cryptography``), and the client and the CLI.

Verification is on by default and fails with a clear Unreachable (exit 6);
``ca_cert=`` / ``--ca-cert`` / ``SSL_CERT_FILE`` trust the private CA; and
``--insecure`` works, with a warning.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from streamcheck import Collector
from tlscerts import make_certificates

from concordctl import ChatSent, Client, Unreachable
from concordctl.server import EmbeddedServer, ServerConfig

PASSWORD = "tls-admin-password-1"


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path, Path]:
    return make_certificates(tmp_path)


@pytest.fixture
async def tls_server(certs: tuple[Path, Path, Path]) -> AsyncIterator[EmbeddedServer]:
    _, cert, key = certs
    config = ServerConfig(
        admin_password=PASSWORD, ssl_certfile=str(cert), ssl_keyfile=str(key), online_delay=0.2
    )
    async with EmbeddedServer(config) as server:
        assert server.url.startswith("https://127.0.0.1:")
        yield server


def _client(server: EmbeddedServer, **kwargs: object) -> Client:
    return Client(
        server.url,
        username="admin",
        password=PASSWORD,
        config_path="/nonexistent",
        timeout=5.0,
        max_retries=0,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_verification_is_on_by_default(
    tls_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("CONCORD_CA_CERT", raising=False)
    with pytest.raises(Unreachable) as failed:
        async with _client(tls_server) as c:
            await c.login()
    assert failed.value.exit_code == 6
    message = str(failed.value)
    assert "\n" not in message and ("TLS" in message or "certificate" in message), message
    assert "--ca-cert" in message and PASSWORD not in message


async def test_ca_cert_verifies_rest_and_the_websocket(
    tls_server: EmbeddedServer, certs: tuple[Path, Path, Path]
) -> None:
    ca, _, _ = certs
    async with _client(tls_server, ca_cert=str(ca)) as c:
        assert c.settings.ws_url.startswith("wss://")
        collector = Collector()
        collector.start(c.events(on_state=collector.on_state))
        await collector.wait_for(lambda: "connected" in collector.state_names(), 10, "wss")
        chat = await c.send_chat("general", "over TLS")
        await collector.wait_for(collector.has_chats([chat]), 10, "the chat over wss")
        await collector.stop()
        assert isinstance(collector.chats()[0], ChatSent)


async def test_ssl_cert_file_is_honoured(
    tls_server: EmbeddedServer, certs: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certs[0]))
    async with _client(tls_server) as c:
        assert (await c.me()).username == "admin"


async def test_insecure_connects_without_verification(
    tls_server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with _client(tls_server, insecure=True) as c:
        assert (await c.me()).username == "admin"
    assert any(r.levelname == "WARNING" for r in caplog.records), "insecure must warn"


async def test_a_ca_that_did_not_sign_the_server_is_refused(
    tls_server: EmbeddedServer, tmp_path: Path
) -> None:
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other_ca, _, _ = make_certificates(other_dir)
    with pytest.raises(Unreachable):
        async with _client(tls_server, ca_cert=str(other_ca)) as c:
            await c.login()


# ------------------------------------------------------------ the CLI


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "concordctl",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONCORD_", "SSL_CERT"))}
    return env | {
        "CONCORD_USERNAME": "admin",
        "CONCORD_PASSWORD": PASSWORD,
        "CONCORD_CONFIG": str(tmp_path / "none.toml"),
        "HOME": str(tmp_path),
    }


async def test_cli_send_over_tls(
    tls_server: EmbeddedServer, certs: tuple[Path, Path, Path], cli_env: dict[str, str]
) -> None:
    ca = str(certs[0])
    send = ("send", "general", "--server", tls_server.url)

    code, out, err = await _cli(*send, "refused by default", env=cli_env)
    assert code == 6, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "--ca-cert" in err and PASSWORD not in err

    code, out, err = await _cli(*send, "with --ca-cert", "--ca-cert", ca, env=cli_env)
    assert code == 0 and out.strip().isdigit(), (code, out, err)

    code, out, err = await _cli(*send, "with SSL_CERT_FILE", env=cli_env | {"SSL_CERT_FILE": ca})
    assert code == 0, (code, out, err)

    code, out, err = await _cli(*send, "insecure", "--insecure", env=cli_env)
    assert code == 0, (code, out, err)
    loud = err.lower()
    assert "insecure" in loud and ("off" in loud or "not verified" in loud), err

    chats = await _cli(
        "history", "general", "--json", "--server", tls_server.url, "--ca-cert", ca, env=cli_env
    )
    assert chats[0] == 0, chats
    for text in ("with --ca-cert", "with SSL_CERT_FILE", "insecure"):
        assert text in chats[1]
    assert "refused by default" not in chats[1]
