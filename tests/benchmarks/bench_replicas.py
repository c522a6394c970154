"""What claims cost: commands per second through 1 and 3 replicas, and !ping p99 on PostgreSQL.

1. Throughput: N ``!ping i`` commands (default 2,000), the same stream fed to
   (a) one bot without a durable state (the floor: no claims),
   (b) one bot on a PostgreSQL state, (c) three bots (replicas, in this
   process, each with its own pool) on one PostgreSQL state. Every reply is
   recorded by a client that makes no network call, so the figure is the
   dispatch plus claim plus reply-record cost. Prints commands/s and the
   ratio to (a); for (c) it also checks that each command was answered once.
2. Latency: a user sends ``!ping`` over REST and the bot (state on PostgreSQL)
   replies; the time until the reply arrives on the user's stream, over M
   pings (default 300) against ``concordctl serve`` in a subprocess.

PostgreSQL: ``CONCORD_TEST_POSTGRES`` (or argv[3]); a fresh database is made
and dropped for each run.

Usage: python tests/benchmarks/bench_replicas.py [N] [M] [POSTGRES_URL]
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bot import free_port

from concordctl import Bot, Client, Context
from concordctl.protocol import Chat, ChatSent, Event, FullUser, Profile, UserStatus

BOT_ID = 1


class RecordingClient:
    """The parts of Client a bot uses; sends are counted, nothing leaves the process."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.next_id = 10_000_000

    async def me(self) -> FullUser:
        return FullUser(
            id=BOT_ID,
            username="bench",
            profile=Profile(created_at=0, nickname=None, bio=None, avatar_id=None),
            status=UserStatus(online_status="ONLINE"),
        )

    async def send_chat(self, channel: Any, content: str, **_: Any) -> Chat:
        self.sent.append(content)
        self.next_id += 1
        return Chat(
            id=self.next_id,
            created_at=0,
            author_id=BOT_ID,
            channel_id=int(channel),
            thread_id=None,
            content=content,
            edited=False,
            reactions={},
        )

    async def search_chats(self, **_: Any) -> list[Chat]:
        return []


def commands(n: int) -> list[ChatSent]:
    return [
        ChatSent(
            chat=Chat(
                id=544123421693575168 + i,
                created_at=1764110000000 + i,
                author_id=2,
                channel_id=100 + i % 8,
                thread_id=None,
                content=f"!ping {i}",
                edited=False,
                reactions={},
            )
        )
        for i in range(n)
    ]


async def feed(events: list[ChatSent]) -> AsyncIterator[Event]:
    for ev in events:
        yield ev


def make_bot(state: str | None) -> Bot:
    bot = Bot(send_rate=0, state=state, help_command=False)

    @bot.command("ping")
    async def ping(ctx: Context) -> None:
        await ctx.reply(f"pong {ctx.args[0]}")

    return bot


async def run_bots(n_bots: int, state: str | None, events: list[ChatSent]) -> tuple[float, list]:
    clients = [RecordingClient() for _ in range(n_bots)]
    bots = [make_bot(state) for _ in range(n_bots)]
    start = time.perf_counter()
    # A finite source ends the run once every handler has finished.
    await asyncio.gather(
        *(b.serve(client=c, events=feed(events)) for b, c in zip(bots, clients, strict=True))  # type: ignore[arg-type]
    )
    elapsed = time.perf_counter() - start
    return elapsed, [s for c in clients for s in c.sent]


def fresh_database(admin: str) -> tuple[str, str]:
    name = "concord_bench_" + secrets.token_hex(4)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, urlunsplit(urlsplit(admin)._replace(path="/" + name))


def drop_database(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def throughput(n: int, admin: str) -> None:
    events = commands(n)
    floor, sent = await run_bots(1, None, events)
    assert len(sent) == n
    print(f"{n} commands, each answered (replies recorded in memory):")
    print(f"  1 bot, no state (floor):     {n / floor:9.0f} commands/s")
    for replicas in (1, 3):
        name, url = fresh_database(admin)
        try:
            elapsed, sent = await run_bots(replicas, url, events)
        finally:
            drop_database(admin, name)
        once = Counter(sent)
        assert len(once) == n and set(once.values()) == {1}, "a command answered twice or never"
        print(
            f"  {replicas} replica(s) on PostgreSQL: {n / elapsed:9.0f} commands/s"
            f"   ratio to the floor {floor / elapsed:.2f}   (each answered once)"
        )


async def latency(m: int, url: str, state: str) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url) as http:
        for name in ("pingbot", "pinger"):
            r = await http.post(
                "/api/users/register", json={"username": name, "password": "pw-bench-1"}
            )
            r.raise_for_status()
    bot = Bot(send_rate=0, state=state)

    @bot.command("ping")
    async def ping(ctx: Context) -> None:
        await ctx.reply("pong")

    task = asyncio.create_task(bot.serve(server=url, username="pingbot", password="pw-bench-1"))
    await asyncio.wait_for(bot.wait_ready(), 20)
    bot_id = bot.user_id
    samples: list[float] = []
    async with Client(url, username="pinger", password="pw-bench-1") as user:
        replies: asyncio.Queue[float] = asyncio.Queue()
        connected = asyncio.Event()

        def on_state(st: object) -> None:
            if getattr(st, "state", None) == "connected":
                connected.set()

        async def watch() -> None:
            async for ev in user.events(on_state=on_state):
                if isinstance(ev, ChatSent) and ev.chat.author_id == bot_id:
                    replies.put_nowait(time.perf_counter())

        watcher = asyncio.create_task(watch())
        await asyncio.wait_for(connected.wait(), 10)
        general = await user.channel_id("general")
        for _ in range(m):
            sent = time.perf_counter()
            await user.send_chat(general, "!ping")
            arrived = await asyncio.wait_for(replies.get(), 10)
            samples.append(arrived - sent)
        watcher.cancel()
    bot.stop()
    await task
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"!ping -> pong with a PostgreSQL state, {m} pings against concordctl serve:")
    print(
        f"  median {statistics.median(samples) * 1000:.2f} ms   p99 {p99 * 1000:.2f} ms"
        f"   max {samples[-1] * 1000:.2f} ms"
    )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000
    m = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    admin = sys.argv[3] if len(sys.argv) > 3 else os.environ.get("CONCORD_TEST_POSTGRES", "")
    if not admin:
        raise SystemExit("give a PostgreSQL URL (argv[3] or CONCORD_TEST_POSTGRES)")
    asyncio.run(throughput(n, admin))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "concordctl", "serve", "--port", str(port), "--db", ":memory:"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    name, state = fresh_database(admin)
    try:
        assert server.stdout is not None
        for _ in range(5):
            line = server.stdout.readline().decode()
            if "serving on" in line:
                break
        else:
            raise SystemExit(f"the server did not start: {line!r}")
        asyncio.run(latency(m, f"http://127.0.0.1:{port}", state))
    finally:
        server.terminate()
        server.wait(10)
        drop_database(admin, name)


if __name__ == "__main__":
    main()
