"""Fan-out of the embedded server: one REST sender, 50 websocket receivers.

The floor is a bare ``websockets`` server broadcasting the same pre-encoded
chat_sent frames to the same number of clients (``websockets.broadcast``, no
HTTP, no database, no ASGI). Both servers run in their own process; the
receivers are spread over a few processes. The sender is a minimal HTTP/1.1
client with ``--concurrency`` keep-alive connections, so that it costs
little next to the server.

Prints deliveries per second for each, the ratio (target >= 0.5), the median
and p99 time from a POST returning to the event arriving at a client, and the
CPU seconds the server process used (the figure that tells implementations
apart when the receivers are the bottleneck). ``--writes direct`` batches a
client's events into one write (``server/fastpath.py``; websockets-sansio only,
others fall back to ASGI sends).

Usage: python tests/benchmarks/bench_fanout.py [--chats 2000] [--clients 50]
       [--procs 5] [--concurrency 8] [--ws websockets-sansio,websockets,wsproto]
       [--http h11,httptools] [--loop asyncio,uvloop] [--writes direct,asgi]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import time
from multiprocessing.connection import Connection

ADMIN_PASSWORD = "bench-admin-password"


def sample_frame(i: int) -> bytes:
    return json.dumps(
        {
            "type": "chat_sent",
            "chat": {
                "id": 700000000000000000 + i,
                "createdAt": 1764110000000 + i,
                "authorId": 678765443489464320,
                "channelId": 678765443489464321,
                "threadId": None,
                "content": f"benchmark chat number {i} with a little text",
                "edited": False,
                "reactions": {},
            },
        }
    ).encode()


# ------------------------------------------------------------------ servers


def run_floor_server(conn: Connection, chats: int, clients: int) -> None:
    import websockets
    from websockets.asyncio.server import ServerConnection, serve

    async def main() -> None:
        connected: set[ServerConnection] = set()
        all_in = asyncio.Event()

        async def handler(ws: ServerConnection) -> None:
            connected.add(ws)
            if len(connected) == clients:
                all_in.set()
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            conn.send(port)
            await all_in.wait()
            conn.recv()  # go
            frames = [sample_frame(i).decode() for i in range(chats)]
            stamps = []
            for frame in frames:
                websockets.broadcast(connected, frame)
                stamps.append(time.monotonic())
                await asyncio.sleep(0)
            conn.send(stamps)
            conn.recv()  # done

    asyncio.run(main())


def run_embedded_server(
    conn: Connection, ws_impl: str, http_impl: str, loop: str, direct: bool
) -> None:
    from concordctl.server import EmbeddedServer, ServerConfig

    async def main() -> None:
        config = ServerConfig(
            admin_password=ADMIN_PASSWORD,
            max_ws_per_user=1000,
            ws_impl=ws_impl,
            http_impl=http_impl,
            online_delay=3600,
            direct_writes=direct,
        )
        async with EmbeddedServer(config) as server:
            conn.send(server.port)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            conn.send(time.process_time())

    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


# ---------------------------------------------------------------- receivers


def run_receivers(conn: Connection, url: str, count: int, chats: int) -> None:
    import websockets

    async def receive(arrivals: list[tuple[int, float]], ready: asyncio.Event) -> None:
        async with websockets.connect(url, compression=None, max_size=2**20) as ws:
            ready.set()
            got = 0
            while got < chats:
                raw = await ws.recv()
                now = time.monotonic()
                if '"chat_sent"' not in raw:
                    continue
                chat_id = json.loads(raw)["chat"]["id"]
                arrivals.append((chat_id, now))
                got += 1

    async def main() -> None:
        per_client: list[list[tuple[int, float]]] = [[] for _ in range(count)]
        ready = [asyncio.Event() for _ in range(count)]
        tasks = [asyncio.create_task(receive(a, r)) for a, r in zip(per_client, ready, strict=True)]
        for event in ready:
            await event.wait()
        conn.send("ready")
        await asyncio.gather(*tasks)
        conn.send([x for a in per_client for x in a])

    asyncio.run(main())


def start_receivers(
    url: str, clients: int, procs: int, chats: int
) -> list[tuple[mp.Process, Connection]]:
    started = []
    for i in range(procs):
        n = clients // procs + (1 if i < clients % procs else 0)
        parent, child = mp.Pipe()
        proc = mp.Process(target=run_receivers, args=(child, url, n, chats), daemon=True)
        proc.start()
        started.append((proc, parent))
    for _, parent in started:
        assert parent.recv() == "ready"
    return started


def collect(receivers: list[tuple[mp.Process, Connection]]) -> list[tuple[int, float]]:
    arrivals: list[tuple[int, float]] = []
    for proc, parent in receivers:
        arrivals.extend(parent.recv())
        proc.join(timeout=30)
    return arrivals


# -------------------------------------------------------------------- runs


def measure_floor(chats: int, clients: int, procs: int) -> float:
    parent, child = mp.Pipe()
    server = mp.Process(target=run_floor_server, args=(child, chats, clients), daemon=True)
    server.start()
    port = parent.recv()
    receivers = start_receivers(f"ws://127.0.0.1:{port}", clients, procs, chats)
    start = time.monotonic()
    parent.send("go")
    parent.recv()
    arrivals = collect(receivers)
    parent.send("done")
    server.join(timeout=30)
    return len(arrivals) / (max(t for _, t in arrivals) - start)


def measure_embedded(
    chats: int,
    clients: int,
    procs: int,
    concurrency: int,
    ws_impl: str,
    http_impl: str,
    loop: str,
    direct: bool,
) -> tuple[float, float, float]:
    import httpx

    parent, child = mp.Pipe()
    server = mp.Process(
        target=run_embedded_server, args=(child, ws_impl, http_impl, loop, direct), daemon=True
    )
    server.start()
    port = parent.recv()
    base = f"http://127.0.0.1:{port}"
    token = httpx.post(
        f"{base}/api/tokens", json={"username": "admin", "password": ADMIN_PASSWORD}
    ).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    channel = httpx.get(f"{base}/api/server", headers=headers).json()["defaultChannelId"]
    ws_url = f"ws://127.0.0.1:{port}/client?token={token}"
    receivers = start_receivers(ws_url, clients, procs, chats)
    returned: dict[int, float] = {}

    async def send_all() -> float:
        # A minimal keep-alive HTTP/1.1 client: httpx costs ~1.5 ms of CPU per
        # POST, which on a small machine would starve the receivers and
        # measure the client instead of the server.
        remaining = iter(range(chats))

        async def worker() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for i in remaining:
                body = json.dumps({"content": f"benchmark chat {i}"}).encode()
                writer.write(
                    f"POST /api/channels/{channel}/chats HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                chat = json.loads(await reader.readexactly(length))
                returned[chat["id"]] = time.monotonic()
            writer.close()

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return start

    cpu_before = time.process_time()
    start = asyncio.run(send_all())
    sender_cpu = time.process_time() - cpu_before
    arrivals = collect(receivers)
    parent.send("stop")
    server_cpu = parent.recv()
    server.join(timeout=30)
    elapsed = max(t for _, t in arrivals) - start
    rate = len(arrivals) / elapsed
    print(
        f"  (run {elapsed:.1f} s; server process CPU {server_cpu:.1f} s, "
        f"sender CPU {sender_cpu:.1f} s)"
    )
    latencies = sorted((t - returned[i]) * 1000 for i, t in arrivals)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return rate, statistics.median(latencies), p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--chats", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--procs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--ws", default="websockets-sansio")
    parser.add_argument("--http", default="h11")
    parser.add_argument("--loop", default="asyncio", help="asyncio or uvloop (if installed)")
    parser.add_argument("--writes", default="direct", help="direct, asgi or direct,asgi")
    args = parser.parse_args()
    floor = measure_floor(args.chats, args.clients, args.procs)
    print(
        f"floor (bare websockets.broadcast): {floor:,.0f} deliveries/s "
        f"({args.chats} frames x {args.clients} clients)"
    )
    combos = [
        (loop, ws_impl, http_impl, writes)
        for loop in args.loop.split(",")
        for ws_impl in args.ws.split(",")
        for http_impl in args.http.split(",")
        for writes in args.writes.split(",")
    ]
    for loop, ws_impl, http_impl, writes in combos:
        rate, median, p99 = measure_embedded(
            args.chats,
            args.clients,
            args.procs,
            args.concurrency,
            ws_impl,
            http_impl,
            loop,
            writes == "direct",
        )
        print(
            f"embedded ws={ws_impl} http={http_impl} loop={loop} writes={writes}: "
            f"{rate:,.0f} deliveries/s, "
            f"ratio {rate / floor:.2f} (target >= 0.5); POST return -> event: "
            f"median {median:.1f} ms, p99 {p99:.1f} ms"
        )


if __name__ == "__main__":
    main()
