"""A silently dead connection is replaced in bounded time; the README example runs."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve

from concordctl.backoff import Backoff
from concordctl.stream import EventStream, StreamHooks, StreamOptions, StreamState
from tests.helpers.timing import UNIT, async_wait_until

ROOT = Path(__file__).resolve().parents[2]


async def test_a_silent_dead_connection_is_replaced_in_bounded_time() -> None:
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        # Accept, then never read again: pings go unanswered, like a dead path.
        ws.transport.pause_reading()
        await done.wait()
        ws.transport.abort()

    async def token() -> str:
        return "a.b.c"

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        states: list[tuple[float, StreamState]] = []
        stream = EventStream(
            f"ws://127.0.0.1:{port}/client",
            get_token=token,
            hooks=StreamHooks(on_state=lambda s: states.append((time.monotonic(), s))),
            options=StreamOptions(
                ping_interval=0.2, ping_timeout=0.2, backoff=Backoff(base=0.05, cap=0.1)
            ),
        )

        async def consume() -> None:
            async for _ in stream:
                pass

        task = asyncio.create_task(consume())
        try:
            await async_wait_until(
                lambda: sum(s.state == "connected" for _, s in states) >= 2, 10 * UNIT
            )
        finally:
            done.set()  # the server hangs up first: no close handshake left to time out
            await stream.aclose()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    connected = next(t for t, s in states if s.state == "connected")
    dropped = next((t, s) for t, s in states if s.state == "reconnecting")
    # Nominal bound: ping_interval + ping_timeout = 0.4 s; generous for a loaded CI.
    assert dropped[0] - connected < 5.0
    assert dropped[1].error == "connection lost (no close frame)"
    assert states[-1][1].state == "closed"


def test_the_readme_example_runs(tmp_path: Path) -> None:
    section = (ROOT / "README.md").read_text().split("## The client library", 1)[1]
    section = section.split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    script = tmp_path / "example.py"
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "admin: deploy done" in out.stdout
