"""Load: the embedded server with many websocket clients and several senders.

``python -m concordctl serve --db :memory:`` runs in a subprocess. This script
registers users, opens ``--clients`` websockets (spread over users, under the
per-user connection cap) and runs ``--senders`` closed-loop senders that POST
chats (each sender to one of ``--channels`` channels) for ``--seconds``. Then
it waits for the deliveries to drain and checks that every client received
every chat exactly once and in order per channel (ids strictly increasing,
and each sender's own chats in the order it sent them).

It reports chats/s, deliveries/s, p50/p99 delivery latency (POST start to
the frame arriving at a client) and the server's peak RSS (VmHWM). The floor,
measured in the same run, is what this harness can receive from a trivial
server (bare ``websockets``, pre-encoded frames, no auth, no database) with
the same number of clients: the ratio shows how much of the harness's own
ceiling the server reaches.

Usage: python tests/benchmarks/bench_load.py [--clients 200] [--senders 20] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from array import array
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

USERS_PER_CONNECTIONS = 16  # clients per user; the server caps connections per user (32)


class _Chat(msgspec.Struct):
    id: int
    channelId: int
    content: str


class _Frame(msgspec.Struct):
    type: str
    chat: _Chat | None = None


_decode = msgspec.json.Decoder(_Frame).decode


@dataclass
class Receiver:
    """One websocket client's view: counts, order checks, latencies."""

    index: int
    received: int = 0
    errors: list[str] = field(default_factory=list)
    last_id: dict[int, int] = field(default_factory=dict)
    last_seq: dict[int, int] = field(default_factory=dict)
    closed: str | None = None


@dataclass
class LoadResult:
    clients: int
    senders: int
    seconds: float
    chats: int = 0
    deliveries: int = 0
    send_seconds: float = 0.0
    drain_seconds: float = 0.0
    latencies_ms: array[float] = field(default_factory=lambda: array("f"))
    server_peak_rss_kib: int = 0
    server_rss_kib: int = 0
    errors: list[str] = field(default_factory=list)
    floor_deliveries_per_second: float = 0.0

    @property
    def chats_per_second(self) -> float:
        return self.chats / self.send_seconds if self.send_seconds else 0.0

    @property
    def deliveries_per_second(self) -> float:
        return self.deliveries / self.drain_seconds if self.drain_seconds else 0.0

    def latency_percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _status_kib(pid: int, name: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def start_server() -> tuple[subprocess.Popen[str], str, str]:
    """``concordctl serve`` on a free port, in memory; returns (process, url, admin password)."""
    password = "load-" + secrets.token_hex(8)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "concordctl",
            "serve",
            "--port",
            "0",
            "--db",
            ":memory:",
            "--admin-password-stdin",
            "--quiet",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # status lines go to stderr
        text=True,
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(password + "\n")
    proc.stdin.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if "serving on " in line:
            url = line.split("serving on ", 1)[1].split()[0]
            return proc, url, password
    proc.kill()
    raise RuntimeError("the server did not start")


async def _token(http: httpx.AsyncClient, username: str, password: str) -> str:
    response = await http.post("/api/tokens", json={"username": username, "password": password})
    response.raise_for_status()
    return str(response.json()["token"])


async def _receive(
    ws: ClientConnection,
    rx: Receiver,
    sent_at: dict[str, float],
    latencies: array[float],
    sample: bool,
) -> None:
    clock = time.perf_counter
    try:
        async for data in _frames(ws):
            frame = _decode(data)
            chat = frame.chat
            if frame.type != "chat_sent" or chat is None:
                continue
            now = clock()
            rx.received += 1
            prev = rx.last_id.get(chat.channelId, -1)
            if chat.id <= prev and len(rx.errors) < 5:
                rx.errors.append(f"client {rx.index}: chat {chat.id} after {prev} (order/dup)")
            rx.last_id[chat.channelId] = chat.id
            sender, _, seq_text = chat.content.partition(":")
            seq = int(seq_text.split(" ", 1)[0])
            sid = int(sender[1:])
            if seq <= rx.last_seq.get(sid, -1) and len(rx.errors) < 5:
                rx.errors.append(f"client {rx.index}: sender {sid} seq {seq} out of order")
            rx.last_seq[sid] = seq
            if sample:
                t0 = sent_at.get(chat.content)
                if t0 is not None:
                    latencies.append((now - t0) * 1000.0)
    except ConnectionClosed as exc:
        rx.closed = str(exc)


async def _frames(ws: ClientConnection) -> AsyncIterator[bytes]:
    while True:
        yield await ws.recv(decode=False)


async def _send_loop(
    url: str,
    token: str,
    sid: int,
    channel_id: int,
    stop: asyncio.Event,
    sent_at: dict[str, float],
    counts: list[int],
    errors: list[str],
    rate: float | None,
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as http:
        seq = 0
        next_at = time.perf_counter()
        while not stop.is_set():
            content = f"s{sid}:{seq} load test chat"
            sent_at[content] = time.perf_counter()
            try:
                response = await http.post(
                    f"/api/channels/{channel_id}/chats", json={"content": content}
                )
                if response.status_code != 200:
                    errors.append(f"sender {sid}: HTTP {response.status_code}")
                    break
            except httpx.HTTPError as exc:
                errors.append(f"sender {sid}: {type(exc).__name__}")
                break
            counts[sid] += 1
            seq += 1
            if rate:
                next_at += 1.0 / rate
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


async def run_load_async(
    url: str,
    password: str,
    clients: int,
    senders: int,
    seconds: float,
    channels: int,
    rate: float | None,
    server_pid: int | None,
) -> LoadResult:
    result = LoadResult(clients, senders, seconds)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        admin = await _token(http, "admin", password)
        auth = {"Authorization": f"Bearer {admin}"}
        listing = (await http.get("/api/channels", headers=auth)).json()
        channel_ids = [next(c["id"] for c in listing if c["name"] == "general")]
        for i in range(1, channels):
            made = await http.post("/api/channels", json={"name": f"load-{i}"}, headers=auth)
            channel_ids.append(made.json()["id"])
        users = max(1, -(-clients // USERS_PER_CONNECTIONS))
        tokens = []
        for u in range(users + senders):
            name, pw = f"load{u}", f"load-pw-{u}-{secrets.token_hex(4)}"
            await http.post("/api/users/register", json={"username": name, "password": pw})
            tokens.append(await _token(http, name, pw))

    ws_url = url.replace("http", "ws", 1) + "/client?token="
    receivers = [Receiver(i) for i in range(clients)]
    sent_at: dict[str, float] = {}
    sockets = []
    for i in range(clients):
        sockets.append(
            await connect(
                ws_url + tokens[i % users],
                max_size=2**20,
                max_queue=None,
                open_timeout=30,
                ping_interval=None,
            )
        )
    sample_every = max(1, clients // 50)  # latency from ~50 clients is plenty
    tasks = [
        asyncio.create_task(
            _receive(ws, rx, sent_at, result.latencies_ms, rx.index % sample_every == 0)
        )
        for ws, rx in zip(sockets, receivers, strict=True)
    ]
    await asyncio.sleep(1.5)  # ONLINE announcements settle
    counts = [0] * senders
    stop = asyncio.Event()
    started = time.perf_counter()
    send_tasks = [
        asyncio.create_task(
            _send_loop(
                url,
                tokens[users + s],
                s,
                channel_ids[s % channels],
                stop,
                sent_at,
                counts,
                result.errors,
                rate,
            )
        )
        for s in range(senders)
    ]
    peak_during = 0
    while time.perf_counter() - started < seconds:
        await asyncio.sleep(min(0.5, seconds))
        if server_pid:
            peak_during = max(peak_during, _status_kib(server_pid, "VmRSS"))
    stop.set()
    await asyncio.gather(*send_tasks)
    result.send_seconds = time.perf_counter() - started
    result.chats = sum(counts)
    expected = result.chats
    drain_deadline = time.perf_counter() + max(30.0, seconds)
    while time.perf_counter() < drain_deadline:
        if all(rx.received >= expected or rx.closed for rx in receivers):
            break
        await asyncio.sleep(0.05)
    result.drain_seconds = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    result.deliveries = sum(rx.received for rx in receivers)
    for rx in receivers:
        result.errors.extend(rx.errors)
        if rx.closed:
            result.errors.append(f"client {rx.index} disconnected: {rx.closed}")
        elif rx.received != expected:
            result.errors.append(f"client {rx.index}: {rx.received} of {expected} chats")
    if server_pid:
        result.server_peak_rss_kib = _status_kib(server_pid, "VmHWM")
        result.server_rss_kib = max(peak_during, _status_kib(server_pid, "VmRSS"))
    del result.errors[50:]
    return result


def run_load(
    clients: int = 200,
    senders: int = 20,
    seconds: float = 60.0,
    channels: int = 4,
    rate: float | None = None,
) -> LoadResult:
    proc, url, password = start_server()
    try:
        return asyncio.run(
            run_load_async(url, password, clients, senders, seconds, channels, rate, proc.pid)
        )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ floor

FLOOR_FRAME = json.dumps(
    {
        "type": "chat_sent",
        "chat": {
            "id": 544123421693575168,
            "createdAt": 1764110000000,
            "authorId": 1,
            "channelId": 2,
            "threadId": None,
            "content": "s0:0 load test chat",
            "edited": False,
            "reactions": {},
        },
    }
)


async def serve_floor() -> None:
    """A trivial server: pushes the same pre-encoded frame to each client until it leaves."""
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(conn: ServerConnection) -> None:
        try:
            while True:
                await conn.send(FLOOR_FRAME)
        except ConnectionClosed:
            pass

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        print(next(iter(server.sockets)).getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def _floor_async(port: int, clients: int, seconds: float) -> float:
    count = [0]

    async def one() -> None:
        async with connect(f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None) as ws:
            while True:
                _decode(await ws.recv(decode=False))
                count[0] += 1

    tasks = [asyncio.create_task(one()) for _ in range(clients)]
    await asyncio.sleep(1.0)
    start, before = time.perf_counter(), count[0]
    await asyncio.sleep(seconds)
    rate = (count[0] - before) / (time.perf_counter() - start)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rate


def measure_floor(clients: int, seconds: float) -> float:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--floor-server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        return asyncio.run(_floor_async(port, clients, seconds))
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(10)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--rate", type=float, help="chats/s per sender (default: closed loop)")
    parser.add_argument("--floor-seconds", type=float, default=5.0)
    parser.add_argument("--floor-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_server:
        asyncio.run(serve_floor())
        return
    floor = measure_floor(args.clients, args.floor_seconds)
    r = run_load(args.clients, args.senders, args.seconds, args.channels, args.rate)
    print(
        f"clients {r.clients}, senders {r.senders}, {r.send_seconds:.1f} s of sending "
        f"({os.cpu_count()} CPUs, server and harness share them)"
    )
    print(f"chats:       {r.chats} ({r.chats_per_second:,.0f} chats/s sustained)")
    print(
        f"deliveries:  {r.deliveries} ({r.deliveries_per_second:,.0f} deliveries/s, "
        f"drained {r.drain_seconds - r.send_seconds:.1f} s after the last send)"
    )
    print(
        f"floor:       {floor:,.0f} deliveries/s (bare websockets server, same harness); "
        f"ratio {r.deliveries_per_second / floor:.2f}"
    )
    print(
        f"latency:     p50 {r.latency_percentile(0.5):.1f} ms, "
        f"p99 {r.latency_percentile(0.99):.1f} ms "
        f"(median of {len(r.latencies_ms)} samples "
        f"{statistics.median(r.latencies_ms) if r.latencies_ms else 0:.1f} ms)"
    )
    print(f"server RSS:  peak {r.server_peak_rss_kib / 1024:.1f} MiB (VmHWM)")
    ok = not r.errors and r.deliveries == r.chats * r.clients
    print("every client received every chat, in order per channel" if ok else "FAILED:")
    for error in r.errors[:20]:
        print("  ", error)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
