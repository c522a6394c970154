"""Soak: ``concordctl tail --json`` over a million events, with flat memory.

A bare ``websockets`` server in another process (the *feed*) plays a Concord
server: it answers the few REST calls a tail makes with fixed JSON and
pushes N pre-encoded ``chat_sent`` frames down ``/client`` as fast as the
socket takes them. ``concordctl tail --json --count N`` runs as a subprocess;
this script counts and checks its NDJSON output (every chat once, in order)
and samples the tail's RSS from /proc as it goes.

It prints the tail's events/s against a floor measured in the same run (a
bare websockets client reading the same feed), and the memory flatness:
RSS samples are keyed by how many events the tail had printed, and the
median over the last fifth of the events is divided by the median over the
second tenth (after start-up, imports and the first buffers). A leak of even
100 bytes per event shows as a ratio well above 1 over a million events.

Usage: python tests/benchmarks/bench_soak.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

TEMPLATE = (
    '{"type":"chat_sent","chat":{"id":%d,"createdAt":%d,"authorId":2,"channelId":1,'
    '"threadId":null,"content":"soak event %d: the quick brown fox jumps over the lazy dog",'
    '"edited":false,"reactions":{}}}'
)
BASE_ID = 544123421693575168
BASE_MS = 1_764_000_000_000


def _rss_kib(pid: int, field_name: str = "VmRSS") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# ---------------------------------------------------------------- the feed


def _user(uid: int, name: str) -> dict[str, Any]:
    return {
        "id": uid,
        "username": name,
        "profile": {"createdAt": BASE_MS, "nickname": name, "bio": None, "avatarId": None},
        "status": {"onlineStatus": "ONLINE"},
    }


CHANNEL = {
    "id": 1,
    "parentChannelId": None,
    "ordinality": 0,
    "name": "general",
    "description": None,
    "capabilities": ["text"],
    "createdAt": BASE_MS,
    "createdByUserId": 1,
}


def _rest(path: str, token: str) -> tuple[int, Any]:
    """The fixed answers of the feed's REST side (GET only: a tail only reads)."""
    users = [_user(1, "admin"), _user(2, "soak")]
    path = path.split("?", 1)[0]
    full_channel = {k: v for k, v in CHANNEL.items() if k != "parentChannelId"}
    routes: dict[str, Any] = {
        "/api/self": users[1],
        "/api/users": users,
        "/api/users/1": users[0],
        "/api/users/2": users[1],
        "/api/channels": [full_channel | {"children": []}],
        "/api/channels/1": CHANNEL,
        "/api/server": {
            "name": "soak",
            "description": None,
            "iconId": None,
            "defaultChannelId": 1,
        },
        "/api/chats": [],
        "/api/channels/1/chats/latest": [],
        "/api/tokens/recycle": {"token": token},
    }
    if path in routes:
        return 200, routes[path]
    return 404, {"path": path, "status": 404, "error": "Not Found", "message": ""}


async def serve_feed(events: int, token: str) -> None:
    """Run the feed until stdin closes; prints its port on the first line."""
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.datastructures import Headers
    from websockets.http11 import Request, Response

    def process_request(conn: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith("/client"):
            return None
        status, body = _rest(request.path, token)
        data = json.dumps(body).encode()
        headers = Headers(
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return Response(status, "OK" if status == 200 else "Not Found", headers, data)

    async def handler(conn: ServerConnection) -> None:
        for i in range(events):
            await conn.send(TEMPLATE % (BASE_ID + i, BASE_MS + i, i))
        await conn.wait_closed()

    async with serve(
        handler, "127.0.0.1", 0, process_request=process_request, max_size=None, compression=None
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def floor_client(port: int, events: int) -> None:
    """The floor: a bare websockets client that only counts the frames."""
    from websockets.asyncio.client import connect

    async with connect(
        f"ws://127.0.0.1:{port}/client?token=x", max_size=None, compression=None
    ) as ws:
        for _ in range(events):
            await ws.recv()


# ------------------------------------------------------------------ runner


@dataclass
class SoakResult:
    events: int
    received: int
    errors: list[str]
    seconds: float
    floor_seconds: float
    #: (seconds since start, events printed so far, RSS in KiB)
    rss_kib: list[tuple[float, int, int]] = field(default_factory=list)
    exit_code: int | None = None
    stderr: str = ""

    @property
    def events_per_second(self) -> float:
        return self.received / self.seconds if self.seconds else 0.0

    @property
    def floor_events_per_second(self) -> float:
        return self.events / self.floor_seconds if self.floor_seconds else 0.0

    def _median_between(self, start: float, end: float) -> float:
        """Median RSS while the tail had printed between start and end (fractions) of the events."""
        window = [r for _, n, r in self.rss_kib if start * self.events <= n <= end * self.events]
        return statistics.median(window) if window else 0.0

    def samples_between(self, start: float, end: float) -> int:
        return sum(1 for _, n, _ in self.rss_kib if start * self.events <= n <= end * self.events)

    @property
    def early_rss_kib(self) -> float:
        return self._median_between(0.1, 0.2)

    @property
    def late_rss_kib(self) -> float:
        return self._median_between(0.8, 1.0)

    @property
    def peak_rss_kib(self) -> int:
        return max((r for _, _, r in self.rss_kib), default=0)

    @property
    def flatness(self) -> float:
        return self.late_rss_kib / self.early_rss_kib if self.early_rss_kib else float("inf")


def _fake_token() -> str:
    import jwt

    now = int(time.time())
    claims = {"sub": "soak", "id": 2, "iss": "Concord", "iat": now, "exp": now + 86400}
    return jwt.encode(claims, "soak-secret-not-a-real-key-0123456789", algorithm="HS256")


_ID = re.compile(rb'"id":\s*(\d+)')


def _check_output(stream: Any, expected: int, result: SoakResult) -> None:
    """Every line a chat_sent, ids consecutive: every event once, in order."""
    want = BASE_ID
    for line in stream:
        if not line.strip():
            continue
        match = _ID.search(line)
        if match is None or b'"chat_sent"' not in line:
            if len(result.errors) < 5:
                result.errors.append(f"unexpected line: {line[:200]!r}")
            continue
        got = int(match.group(1))
        if got != want and len(result.errors) < 5:
            result.errors.append(f"event {result.received}: id {got}, expected {want}")
        want = got + 1
        result.received += 1
    del expected


def run_soak(events: int, *, sample_every: float = 0.1, time_limit: float = 600.0) -> SoakResult:
    """Run the feed and a tail over ``events`` events; check and measure."""
    token = _fake_token()
    feed = subprocess.Popen(
        [sys.executable, __file__, "--feed", str(events), "--token", token],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert feed.stdout is not None
        port = int(feed.stdout.readline())
        started = time.monotonic()
        asyncio.run(floor_client(port, events))
        floor_seconds = time.monotonic() - started

        env = dict(os.environ, CONCORD_TOKEN=token, CONCORD_CONFIG=os.devnull)
        env.pop("CONCORD_PROFILE", None)
        result = SoakResult(events, 0, [], 0.0, floor_seconds)
        started = time.monotonic()
        tail = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "concordctl",
                "tail",
                "--json",
                "--count",
                str(events),
                "--server",
                f"http://127.0.0.1:{port}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        checker = threading.Thread(target=_check_output, args=(tail.stdout, events, result))
        checker.start()
        stderr_chunks: list[bytes] = []
        drain = threading.Thread(target=lambda: stderr_chunks.append(tail.stderr.read()))  # type: ignore[union-attr]
        drain.start()
        while tail.poll() is None:
            rss = _rss_kib(tail.pid)
            if rss is not None:
                result.rss_kib.append((time.monotonic() - started, result.received, rss))
            if time.monotonic() - started > time_limit:
                tail.kill()
                result.errors.append(f"tail still running after {time_limit} s")
                break
            time.sleep(sample_every)
        result.exit_code = tail.wait()
        result.seconds = time.monotonic() - started
        checker.join()
        drain.join()
        result.stderr = b"".join(stderr_chunks).decode(errors="replace")
        if result.received != events:
            result.errors.append(f"received {result.received} of {events} events")
        return result
    finally:
        if feed.stdin is not None:
            feed.stdin.close()
        try:
            feed.wait(5)
        except subprocess.TimeoutExpired:
            feed.kill()
            feed.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--feed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.feed is not None:
        asyncio.run(serve_feed(args.feed, args.token))
        return
    result = run_soak(args.events)
    print(f"events:             {result.received} of {result.events}, exit {result.exit_code}")
    print(f"floor (bare client): {result.floor_events_per_second:,.0f} events/s")
    print(
        f"concordctl tail:     {result.events_per_second:,.0f} events/s  "
        f"ratio {result.events_per_second / result.floor_events_per_second:.2f} of the floor"
    )
    print(
        f"tail RSS: early {result.early_rss_kib / 1024:.1f} MiB, late "
        f"{result.late_rss_kib / 1024:.1f} MiB, peak {result.peak_rss_kib / 1024:.1f} MiB, "
        f"flatness (late/early) {result.flatness:.3f}"
    )
    for error in result.errors:
        print("ERROR:", error)
    if result.stderr.strip():
        print("tail stderr:", result.stderr.strip()[-2000:])
    sys.exit(1 if result.errors or result.exit_code else 0)


if __name__ == "__main__":
    main()
