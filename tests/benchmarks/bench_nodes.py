"""Several ``concordctl serve`` nodes on one PostgreSQL database: what decides scaling.

This machine has two cores, so throughput cannot show N machines scaling;
what decides it can be measured: the nodes' CPU seconds per delivery (user +
sys of every node process, over chats x clients) with 1, 2 and 3 nodes and
the same clients, and the p99 delivery latency of clients on another node
than the sender's against one node's p99. The same run on one SQLite node
gives the PostgreSQL backend's per-chat cost against SQLite's, also counting
the PostgreSQL backend processes' CPU (they are on this machine too).

One sender posts ``--chats`` chats over REST to node 0 at ``--rate`` per
second (below saturation: p99 under saturation measures the queue); the
``--clients`` websocket receivers run in ``--procs`` other processes and are
spread round-robin over the nodes. A chat's latency is from the start of its
POST to its arrival at a receiver (one clock: one machine).

Targets: CPU per delivery with 3 nodes <= 1.5x one node's; cross-node p99
<= 2x single-node p99.

Usage: CONCORD_TEST_POSTGRES=postgresql://postgres@127.0.0.1:5432/test \\
       python tests/benchmarks/bench_nodes.py [--chats 600] [--clients 60]
       [--rate 100] [--procs 2] [--nodes 1,2,3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ADMIN_PASSWORD = "bench-nodes-admin-password"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user + sys CPU seconds of a process so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Run:
    label: str
    nodes: int
    chats: int
    clients: int
    node_cpu: float = 0.0
    db_cpu: float = 0.0
    #: (index of the receiver's node, latency in ms) for every delivery.
    latencies: list[tuple[int, float]] = field(default_factory=list)
    missing: int = 0

    @property
    def deliveries(self) -> int:
        return len(self.latencies)

    def p(self, q: float, cross: bool | None = None) -> float:
        values = sorted(ms for node, ms in self.latencies if cross is None or (node != 0) == cross)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q * len(values)))]


def start_node(db: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "concordctl",
            "serve",
            "--port",
            "0",
            "--db",
            db,
            "--admin-password-stdin",
            "--quiet",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(ADMIN_PASSWORD + "\n")
    proc.stdin.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if "serving on " in line:
            url = line.split("serving on ", 1)[1].split()[0]
            # Keep reading stderr so the node never blocks on a full pipe.
            import threading

            threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()  # type: ignore[union-attr]
            return proc, url
    proc.kill()
    raise RuntimeError(f"node did not start on {db}")


def receivers(conn: Connection, urls: list[tuple[int, str]], token: str, chats: int) -> None:
    """A receiver process: sockets to (node index, url); reports latencies."""
    import websockets

    async def main() -> None:
        out: list[tuple[int, float]] = []
        got: list[int] = [0] * len(urls)
        done = asyncio.Event()
        sockets = []
        for node, url in urls:
            ws_url = url.replace("http", "ws", 1) + f"/client?token={token}"
            sockets.append((node, await websockets.connect(ws_url, max_queue=None)))

        async def read(index: int, node: int, ws: websockets.ClientConnection) -> None:
            async for raw in ws:
                now = time.time()
                if '"chat_sent"' not in raw:
                    continue
                sent = float(json.loads(raw)["chat"]["content"])
                out.append((node, (now - sent) * 1000))
                got[index] += 1
                if all(n >= chats for n in got):
                    done.set()

        tasks = [asyncio.create_task(read(i, n, ws)) for i, (n, ws) in enumerate(sockets)]
        conn.send("ready")
        await asyncio.to_thread(conn.recv)  # the sender finished (the loop keeps reading)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 30)
        for task in tasks:
            task.cancel()
        for _, ws in sockets:
            await ws.close()
        conn.send((out, sum(max(0, chats - n) for n in got)))

    asyncio.run(main())


async def send(url: str, chats: int, rate: float) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        token = (
            await http.post("/api/tokens", json={"username": "admin", "password": ADMIN_PASSWORD})
        ).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        channel = (await http.get("/api/server", headers=headers)).json()["defaultChannelId"]
        limit = asyncio.Semaphore(16)
        started = time.monotonic()

        async def one() -> None:
            async with limit:
                got = await http.post(
                    f"/api/channels/{channel}/chats",
                    json={"content": f"{time.time():.6f}"},
                    headers=headers,
                )
                got.raise_for_status()

        tasks = []
        for i in range(chats):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)


def token_for(url: str) -> str:
    import httpx

    got = httpx.post(f"{url}/api/tokens", json={"username": "admin", "password": ADMIN_PASSWORD})
    return str(got.json()["token"])


def db_backend_pids(admin_url: str, db: str) -> list[int]:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (db,)).fetchall()
    return [int(r[0]) for r in rows]


def run(
    label: str, db: str, nodes: int, args: argparse.Namespace, pg: tuple[str, str] | None
) -> Run:
    procs = [start_node(db) for _ in range(nodes)]
    result = Run(label, nodes, args.chats, args.clients)
    try:
        urls = [url for _, url in procs]
        token = token_for(urls[0])
        spread = [(i % nodes, urls[i % nodes]) for i in range(args.clients)]
        pipes, workers = [], []
        for k in range(args.procs):
            mine, theirs = mp.Pipe()
            worker = mp.Process(
                target=receivers, args=(theirs, spread[k :: args.procs], token, args.chats)
            )
            worker.start()
            pipes.append(mine)
            workers.append(worker)
        for pipe in pipes:
            assert pipe.recv() == "ready"
        time.sleep(1.5)  # presence announcements settle before measuring
        db_pids = db_backend_pids(pg[0], pg[1]) if pg else []
        before = sum(cpu_seconds(p.pid) for p, _ in procs)
        db_before = sum(_safe_cpu(pid) for pid in db_pids)
        asyncio.run(send(urls[0], args.chats, args.rate))
        for pipe in pipes:
            pipe.send("done")
        for pipe in pipes:
            latencies, missing = pipe.recv()
            result.latencies.extend(latencies)
            result.missing += missing
        result.node_cpu = sum(cpu_seconds(p.pid) for p, _ in procs) - before
        result.db_cpu = sum(_safe_cpu(pid) for pid in db_pids) - db_before
        for worker in workers:
            worker.join(30)
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return result


def _safe_cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:  # a backend that ended
        return 0.0


@contextlib.contextmanager
def fresh_database(admin_url: str) -> object:
    import psycopg

    name = "concord_bench_" + secrets.token_hex(4)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def report(runs: list[Run]) -> dict[str, float]:
    print(
        f"{'run':<14}{'deliveries':>11}{'lost':>6}{'node CPU s':>11}{'µs/delivery':>12}"
        f"{'db CPU s':>9}{'µs/chat':>9}{'p50 ms':>8}{'p99 ms':>8}{'x-node p99':>11}"
    )
    for r in runs:
        per_delivery = r.node_cpu / max(1, r.deliveries) * 1e6
        per_chat = (r.node_cpu + r.db_cpu) / max(1, r.chats) * 1e6
        cross = r.p(0.99, cross=True) if r.nodes > 1 else float("nan")
        print(
            f"{r.label:<14}{r.deliveries:>11}{r.missing:>6}{r.node_cpu:>11.2f}{per_delivery:>12.1f}"
            f"{r.db_cpu:>9.2f}{per_chat:>9.0f}{r.p(0.5):>8.1f}{r.p(0.99):>8.1f}{cross:>11.1f}"
        )
    by = {r.label: r for r in runs}
    ratios: dict[str, float] = {}

    def cpu(r: Run) -> float:
        return r.node_cpu / max(1, r.deliveries)

    one = by.get("postgres x1")
    if one is not None:
        for n in (2, 3):
            other = by.get(f"postgres x{n}")
            if other is not None:
                ratios[f"cpu/delivery {n} nodes / 1 node"] = cpu(other) / cpu(one)
                ratios[f"cross-node p99 {n} nodes / 1-node p99"] = other.p(
                    0.99, cross=True
                ) / one.p(0.99)
    sqlite = by.get("sqlite x1")
    if sqlite is not None and one is not None:
        ratios["per-chat cost postgres / sqlite (nodes only)"] = (one.node_cpu / one.chats) / (
            sqlite.node_cpu / sqlite.chats
        )
        ratios["per-chat cost postgres / sqlite (nodes + db)"] = (
            (one.node_cpu + one.db_cpu) / one.chats
        ) / (sqlite.node_cpu / sqlite.chats)
        ratios["1-node p99 postgres / sqlite"] = one.p(0.99) / sqlite.p(0.99)
    targets = {"cpu/delivery 3 nodes / 1 node": 1.5, "cross-node p99 3 nodes / 1-node p99": 2.0}
    for name, value in ratios.items():
        target = targets.get(name)
        verdict = "" if target is None else (" ok" if value <= target else f" over {target}")
        print(f"{name:<48}{value:6.2f}x{verdict}")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--chats", type=int, default=600)
    parser.add_argument("--clients", type=int, default=60)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--nodes", default="1,2,3")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    admin_url = os.environ.get("CONCORD_TEST_POSTGRES")
    if not admin_url:
        raise SystemExit("set CONCORD_TEST_POSTGRES=postgresql://postgres@127.0.0.1:5432/test")
    runs = []
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(run("sqlite x1", str(Path(tmp) / "bench.db"), 1, args, None))
    for n in [int(x) for x in args.nodes.split(",")]:
        with fresh_database(admin_url) as (name, url):  # type: ignore[misc]
            runs.append(run(f"postgres x{n}", url, n, args, (admin_url, name)))
    report(runs)


if __name__ == "__main__":
    main()
