"""Three ``concordctl serve`` nodes on one PostgreSQL database; one is SIGKILLed
mid-run. Its clients move (through a loopback balancer) to another node and
recover every chat; nothing any node acknowledged is lost; the clients of
the other nodes notice nothing but the presence change."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from concordctl import ChatSent, Client, Gap, UserStatusUpdated
from tests.helpers.timing import UNIT, async_wait_until
from tests.reliability.balancer import Balancer

PASSWORD = "nodes-admin-password"


async def _node(db: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
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
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(PASSWORD.encode() + b"\n")
    await proc.stdin.drain()
    proc.stdin.close()
    seen = []
    async with asyncio.timeout(60 * UNIT):
        while line := (await proc.stderr.readline()).decode():
            seen.append(line)
            if "serving on " in line:
                url = line.split("serving on ", 1)[1].split()[0]
                asyncio.get_running_loop().create_task(_drain(proc.stderr))
                return proc, url
    raise AssertionError("node did not start: " + "".join(seen))


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


@pytest.fixture
async def three_nodes(postgres_url: str) -> AsyncIterator[list[tuple[Any, str]]]:
    nodes: list[tuple[asyncio.subprocess.Process, str]] = []
    try:
        for _ in range(3):  # one after another: the first seeds the database
            nodes.append(await _node(postgres_url))
        yield nodes
    finally:
        for proc, _ in nodes:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in nodes:
            try:
                await asyncio.wait_for(proc.wait(), 30 * UNIT)
            except TimeoutError:
                proc.kill()


async def test_a_sigkilled_node_costs_its_clients_one_reconnect_and_nothing_else(
    three_nodes: list[tuple[asyncio.subprocess.Process, str]],
) -> None:
    ports = [int(url.rsplit(":", 1)[1]) for _, url in three_nodes]
    victim = three_nodes[0][0]
    async with contextlib.AsyncExitStack() as stack:
        # Two clients per node; each balancer prefers its node, then the next ones.
        balancers = [
            await stack.enter_async_context(Balancer(ports[i:] + ports[:i]))
            for i in range(3)
            for _ in range(2)
        ]
        clients = [
            await stack.enter_async_context(
                Client(lb.url, username="admin", password=PASSWORD, max_retries=5)
            )
            for lb in balancers
        ]
        channel = (await clients[0].server_info()).default_channel_id
        received: list[list[int]] = [[] for _ in clients]
        recovered: list[int] = [0 for _ in clients]
        gaps: list[int] = [0 for _ in clients]
        offline_seen: list[set[int]] = [set() for _ in clients]
        ready = [asyncio.Event() for _ in clients]

        async def listen(index: int) -> None:
            ready[index].set()
            async for event in clients[index].events():
                if isinstance(event, ChatSent):
                    received[index].append(event.chat.id)
                    recovered[index] += bool(event.recovered)
                elif isinstance(event, Gap):
                    gaps[index] += 1
                elif isinstance(event, UserStatusUpdated) and event.status == "OFFLINE":
                    offline_seen[index].add(event.user_id)

        listeners = [asyncio.create_task(listen(i)) for i in range(len(clients))]
        stack.push_async_callback(_cancel, listeners)
        for event in ready:
            await asyncio.wait_for(event.wait(), 30 * UNIT)
        # Wait until every stream is connected and delivering: one chat all must see.
        async with httpx.AsyncClient(base_url=three_nodes[1][1], timeout=10 * UNIT) as http:
            token = (
                await http.post("/api/tokens", json={"username": "admin", "password": PASSWORD})
            ).json()["token"]
            headers = {"Authorization": f"Bearer {token}"}
            first = await http.post(
                f"/api/channels/{channel}/chats", json={"content": "warm-up"}, headers=headers
            )
            warm_id = first.json()["id"]
            await async_wait_until(lambda: all(warm_id in r for r in received), 30 * UNIT)
            # A user whose only socket is on the node about to die.
            vic = await http.post(
                "/api/users/register", json={"username": "vic", "password": "vic-password"}
            )
            vic_token = (
                await http.post("/api/tokens", json={"username": "vic", "password": "vic-password"})
            ).json()["token"]
            vic_id = vic.json()["id"]
        vic_ws = await stack.enter_async_context(
            # Nobody reads vic's socket: with a bounded queue it would stop
            # reading once full, never see its node die, and its close would
            # wait out the 10 s close timeout.
            websockets.connect(
                three_nodes[0][1].replace("http", "ws") + f"/client?token={vic_token}",
                max_queue=None,
            )
        )
        assert vic_ws is not None

        async def vic_online_elsewhere() -> bool:
            async with httpx.AsyncClient(base_url=three_nodes[2][1]) as http:
                got = await http.get(f"/api/users/{vic_id}", headers=headers)
                return bool(got.json()["status"]["onlineStatus"] == "ONLINE")

        await async_wait_until(vic_online_elsewhere, 10 * UNIT, "vic ONLINE on node 2")

        acked: list[int] = [warm_id]
        killed = asyncio.Event()

        async def sender(node: int, count: int) -> None:
            urls = [three_nodes[(node + k) % 3][1] for k in range(3)]
            async with httpx.AsyncClient(timeout=5 * UNIT) as http:
                token = None
                for n in range(count):
                    for url in urls:  # on failure, the sender moves to the next node
                        try:
                            if token is None:
                                got = await http.post(
                                    f"{url}/api/tokens",
                                    json={"username": "admin", "password": PASSWORD},
                                )
                                token = got.json()["token"]
                            sent = await http.post(
                                f"{url}/api/channels/{channel}/chats",
                                json={"content": f"s{node}-{n}"},
                                headers={"Authorization": f"Bearer {token}"},
                            )
                        except httpx.TransportError:
                            continue
                        if sent.status_code == 200:
                            acked.append(sent.json()["id"])
                            break
                    if n == count // 3 and node == 0:
                        victim.send_signal(signal.SIGKILL)  # mid-run, requests in flight
                        killed.set()
                    await asyncio.sleep(0)  # a yield: the three senders interleave

        await asyncio.gather(*(sender(node, 60) for node in range(3)))
        assert killed.is_set()
        await asyncio.wait_for(victim.wait(), 10 * UNIT)
        expected = set(acked)
        assert len(expected) == len(acked)  # ids are unique across nodes

        def complete() -> bool:
            return all(expected <= set(r) for r in received)

        await async_wait_until(complete, 60 * UNIT)
        for got in received:
            assert len(got) == len(set(got)), "a chat arrived twice"
        moved = [0, 1]  # the victim's clients
        for index in moved:
            assert gaps[index] >= 1  # they reconnected and recovered across the gap
        for index in range(2, len(clients)):
            assert gaps[index] == 0 and recovered[index] == 0  # the others noticed nothing
        # The one thing the others notice: vic, whose only socket died with the node,
        # goes OFFLINE; admin (online on the other nodes too) does not.
        await async_wait_until(lambda: all(vic_id in s for s in offline_seen[2:]), 10 * UNIT)
        assert all(s == {vic_id} for s in offline_seen[2:])


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
