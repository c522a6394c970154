"""A ``concordctl serve`` process killed with SIGKILL and started again on
the same database: every chat it acknowledged is still there, and a client
that was connected all along ends up with every chat exactly once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from streamcheck import Collector, Sender, assert_exactly_once_in_order
from test_fault_stream import FAST

from concordctl import Client

PASSWORD = "crash-admin-pw-" + secrets.token_hex(4)


async def _serve(db: Path, port: int = 0) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "concordctl",
        "serve",
        "--port",
        str(port),
        "--db",
        str(db),
        "--admin-password-stdin",
        "--quiet",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,  # status lines go to stderr
        env={**os.environ, "HOME": str(db.parent)},
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(PASSWORD.encode() + b"\n")
    await proc.stdin.drain()
    proc.stdin.close()
    async with asyncio.timeout(30):
        while line := (await proc.stderr.readline()).decode():
            if "serving on " in line:
                return proc, line.split("serving on ", 1)[1].split()[0]
    raise AssertionError("concordctl serve did not start")


@pytest.fixture
async def crashable(tmp_path: Path) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    procs: list[asyncio.subprocess.Process] = []
    yield procs
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            with contextlib.suppress(Exception):
                await proc.wait()


async def test_sigkilled_server_keeps_acknowledged_chats_and_clients_recover(
    tmp_path: Path, crashable: list[asyncio.subprocess.Process]
) -> None:
    db = tmp_path / "server.db"
    proc, url = await _serve(db)
    crashable.append(proc)
    port = int(url.rsplit(":", 1)[1])
    sender = await Sender.login(url, "admin", PASSWORD, "general")
    async with Client(
        url, username="admin", password=PASSWORD, config_path="/nonexistent", timeout=3.0
    ) as client:
        collector = Collector()
        collector.start(client.events(on_state=collector.on_state, **FAST))
        await collector.wait_for(lambda: "connected" in collector.state_names(), 10, "connect")
        acknowledged = await sender.send_many("before-crash", 20)
        proc.send_signal(signal.SIGKILL)  # right after the last 200: no clean shutdown
        await proc.wait()
        await collector.wait_for(
            lambda: "reconnecting" in collector.state_names(), 10, "noticing the crash"
        )

        proc, _ = await _serve(db, port)
        crashable.append(proc)
        await sender.aclose()
        sender = await Sender.login(url, "admin", PASSWORD, "general")
        stored = (await sender.http.get("/api/chats", params={"size": 1000})).json()
        assert {c.id for c in acknowledged} <= {c["id"] for c in stored}, "acknowledged chats lost"
        after = await sender.send_many("after-restart", 5)
        await collector.wait_for(collector.has_chats(acknowledged + after), 20, "every chat")
        await collector.stop()
        assert_exactly_once_in_order(collector, acknowledged + after)
    await sender.aclose()
