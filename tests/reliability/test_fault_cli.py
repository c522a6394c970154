"""The command line through a misbehaving network, as a user runs it: a real
``python -m concordctl`` subprocess pointed at a FaultProxy.

* ``tail --json`` reconnects, prints the gap marker and every chat sent
  meanwhile once and in order (``"recovered": true``), says on stderr that it
  is reconnecting, and notices a silent socket within its keepalive bound.
* ``send`` fails with the documented exit codes: 6 when the connection is
  refused or cut mid-response (without a blind retry that would double-post),
  124 when the server never answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy
from streamcheck import Sender, poll_until

from concordctl.server import EmbeddedServer
from tests.helpers.timing import UNIT, async_wait_until

# The stream's default keepalive (stream.EventStream): a ping every 20 s,
# 10 s for the pong. tail has no flag to change it, so its bound is theirs.
TAIL_DEAD_SOCKET_BOUND = 20.0 + 10.0 + 4.0
REST_TIMEOUT = 10.0  # the client's default, which send uses


def cli_env(tmp_path: Path, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
    env |= {
        "CONCORD_TOKEN": token,
        "CONCORD_CONFIG": str(tmp_path / "none.toml"),
        "HOME": str(tmp_path),
        "NO_COLOR": "1",
    }
    return env


def _token(sender: Sender) -> str:
    return str(sender.http.headers["Authorization"]).split(" ", 1)[1]


_started: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
async def no_leftover_processes() -> AsyncIterator[None]:
    """A test that fails half-way must not leave its tail running."""
    yield
    while _started:
        proc = _started.pop()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


class Tail:
    """A running ``concordctl tail --json``, its output collected as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        _started.append(proc)
        self.lines: list[dict[str, Any]] = []
        self.raw_out: list[str] = []
        self.stderr: list[tuple[float, str]] = []
        self._changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_out()), loop.create_task(self._read_err())]

    @classmethod
    async def start(cls, server: EmbeddedServer, url: str, env: dict[str, str], *args: str) -> Tail:
        """Start a tail and wait until its websocket is open on the server."""
        before = server.connected_clients()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "concordctl",
            "tail",
            "--json",
            "--server",
            url,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        tail = cls(proc)

        def connected() -> bool:
            assert proc.returncode is None, "".join(t for _, t in tail.stderr)
            return server.connected_clients() > before

        await async_wait_until(connected, 20 * UNIT, what="the tail's websocket")
        return tail

    async def _read_out(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            text = line.decode()
            self.raw_out.append(text)
            if not text.endswith("\n"):
                continue  # the last, partial line of a killed tail
            self.lines.append(json.loads(text))
            self._changed.set()

    async def _read_err(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append((time.monotonic(), line.decode()))
            self._changed.set()

    def chat_ids(self) -> list[int]:
        return [line["chat"]["id"] for line in self.lines if line.get("type") == "chat_sent"]

    async def wait_for_chats(self, chats: list[Any], within: float) -> None:
        wanted = {c.id for c in chats}
        try:
            async with asyncio.timeout(within):
                while not wanted <= set(self.chat_ids()):
                    if self.proc.returncode is not None:
                        break
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pass
        missing = wanted - set(self.chat_ids())
        assert not missing, (
            f"tail did not print {len(missing)} chats within {within} s; "
            f"stderr: {''.join(t for _, t in self.stderr)[-1000:]}"
        )

    async def wait_for_stderr(self, needle: str, after: float, within: float) -> float:
        async with asyncio.timeout(within):
            while True:
                for when, text in self.stderr:
                    if when >= after and needle in text:
                        return when
                self._changed.clear()
                await self._changed.wait()

    async def finish(self, within: float = 10.0) -> int:
        """Wait for the exit (``--count``), or interrupt it."""
        try:
            async with asyncio.timeout(within):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.terminate()
            code = await self.proc.wait()
        await asyncio.gather(*self._tasks)
        return code


def _assert_once_in_order(tail: Tail, sent: list[Any]) -> None:
    ids = [i for i in tail.chat_ids() if i in {c.id for c in sent}]
    assert ids == [c.id for c in sent], "tail printed chats missing, twice or out of order"


async def test_tail_reconnects_and_prints_every_missed_chat_once(
    server: EmbeddedServer, proxy: FaultProxy, sender: Sender, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, _token(sender))
    expected = 2 + 6 + 3 + 2
    tail = await Tail.start(server, proxy.url, env, "--type", "chat_sent", "--count", str(expected))
    live = await sender.send_many("live", 2)
    await tail.wait_for_chats(live, 15)

    cut_at = time.monotonic()
    await proxy.refuse(1.0)
    await proxy.cut()
    missed = await sender.send_many("missed", 6)
    await tail.wait_for_chats(missed, 20)
    await tail.wait_for_stderr("reconnecting", cut_at, 5)

    proxy.drop_bytes(9)  # corrupt the next frame in flight
    corrupted = await sender.send_many("corrupted", 3)
    await tail.wait_for_chats(corrupted, 20)
    await sender.send_many("after", 2)  # live, or recovered if a reconnect is under way
    code = await tail.finish()

    assert code == 0, "".join(t for _, t in tail.stderr)
    _assert_once_in_order(tail, sender.sent)
    recovered = {line["chat"]["content"] for line in tail.lines if line.get("recovered")}
    assert {c.content for c in missed} <= recovered
    gaps = [line for line in tail.lines if line.get("type") == "concordctl.gap"]
    assert gaps and all(g["since"] <= g["until"] for g in gaps)
    first_missed = next(i for i, line in enumerate(tail.lines) if line.get("recovered"))
    assert tail.lines[first_missed - 1]["type"] == "concordctl.gap"
    output = "".join(tail.raw_out) + "".join(t for _, t in tail.stderr)
    assert _token(sender) not in output


# ------------------------------------------------------------------ send


async def _send(url: str, env: dict[str, str], *args: str) -> tuple[int, str, str, float]:
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "concordctl",
        "send",
        "--server",
        url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _started.append(proc)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(), time.monotonic() - start


def _one_clear_line(stderr: str, token: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and len(lines) <= 2, stderr
    assert "Traceback" not in stderr and token not in stderr
    assert lines[-1].startswith("concordctl:"), stderr


async def test_send_to_a_refused_port_exits_6(
    proxy: FaultProxy, sender: Sender, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, _token(sender))
    await proxy.refuse(120)
    code, _, err, _ = await _send(proxy.url, env, str(sender.channel_id), "hello")
    assert code == 6, err
    _one_clear_line(err, _token(sender))


async def test_send_cut_mid_response_exits_6_and_never_double_posts(
    proxy: FaultProxy, sender: Sender, server: EmbeddedServer, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, _token(sender))
    proxy.cut_mid_response(keep=25, request=b"POST /api/channels/")  # status line only
    code, out, err, _ = await _send(proxy.url, env, str(sender.channel_id), "cut-once")
    assert code == 6, (code, out, err)
    _one_clear_line(err, _token(sender))
    assert "may" in err, "the user is told the chat may have been sent"
    # The request did reach the server: the chat exists exactly once (no
    # blind retry of a POST).
    response = await sender.http.get("/api/chats", params={"query": "cut-once"})
    assert [c["content"] for c in response.json()].count("cut-once") == 1

    # With --key the retry a CI job does after such a failure does not double-post.
    proxy.cut_mid_response(keep=25, request=b"POST /api/channels/")
    args = (str(sender.channel_id), "keyed", "--key", "job-42")
    first = await _send(proxy.url, env, *args)
    assert first[0] != 0
    again = await _send(proxy.url, env, *args)
    assert again[0] == 0, again
    response = await sender.http.get("/api/chats", params={"query": "keyed"})
    assert len([c for c in response.json() if c["content"].startswith("keyed")]) == 1


async def test_tail_killed_mid_stream_resumes_from_its_checkpoint(
    server: EmbeddedServer, proxy: FaultProxy, sender: Sender, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, _token(sender))
    checkpoint = str(tmp_path / "tail.ckpt")
    args = ("--type", "chat_sent", "--checkpoint", checkpoint)
    first = await Tail.start(server, proxy.url, env, *args)
    burst = asyncio.get_running_loop().create_task(sender.send_many("burst", 40))
    await poll_until(lambda: len(first.chat_ids()) >= 10, 20, "the first ten chats")
    first.proc.kill()  # SIGKILL mid-stream: no clean shutdown, no last write
    await first.finish()
    await burst
    later = await sender.send_many("later", 5)

    second = await Tail.start(server, proxy.url, env, *args)
    await second.wait_for_chats([*sender.sent[len(first.chat_ids()) :], *later], 8)
    second.proc.terminate()
    await second.finish()
    seen_first, seen_second = first.chat_ids(), second.chat_ids()
    assert sorted(set(seen_first) | set(seen_second)) == [c.id for c in sender.sent]
    assert seen_second == sorted(set(seen_second)), "the restarted tail repeated or reordered"
    overlap = set(seen_first) & set(seen_second)
    assert len(overlap) <= 1, f"{len(overlap)} chats printed by both runs"


async def test_tail_checkpoint_never_runs_ahead_of_its_output(
    server: EmbeddedServer, proxy: FaultProxy, sender: Sender, tmp_path: Path
) -> None:
    # Freeze the tail (SIGSTOP) at many moments of a burst: what is on disk
    # must never name a chat that has not reached stdout, or a crash at that
    # moment loses it.
    env = cli_env(tmp_path, _token(sender))
    checkpoint = tmp_path / "tail.ckpt"
    tail = await Tail.start(
        server, proxy.url, env, "--type", "chat_sent", "--checkpoint", str(checkpoint)
    )
    stop = asyncio.Event()

    async def burst() -> None:
        i = 0
        while not stop.is_set():
            await sender.send(f"burst-{i}")
            i += 1

    task = asyncio.get_running_loop().create_task(burst())
    ahead = []
    try:
        await poll_until(lambda: len(tail.chat_ids()) >= 5, 20, "the first chats")
        for _ in range(8):
            # A new moment: the tail has printed more since the last one.
            printed_before = len(tail.chat_ids())
            await async_wait_until(lambda n=printed_before: len(tail.chat_ids()) > n, 10 * UNIT)
            os.kill(tail.proc.pid, signal.SIGSTOP)
            try:
                saved = json.loads(await asyncio.to_thread(checkpoint.read_text))["chatId"]
                # Stopped, it writes nothing more: the saved chat must be among what it
                # printed once the pipe is read to its end (waited for, not slept).
                try:
                    await async_wait_until(lambda s=saved: s in tail.chat_ids(), 2 * UNIT)
                except AssertionError:
                    ahead.append((saved, max(tail.chat_ids())))
            finally:
                os.kill(tail.proc.pid, signal.SIGCONT)
    finally:
        stop.set()
        await task
        tail.proc.terminate()
        await tail.finish()
    assert not ahead, f"checkpoint ahead of stdout at {len(ahead)} of 8 moments"


async def test_wait_gate_sees_an_approval_sent_during_an_outage(
    server: EmbeddedServer, proxy: FaultProxy, sender: Sender, tmp_path: Path
) -> None:
    # The CI gate must not miss the one chat it waits for because the
    # network was down at that moment: it would hang until its timeout.
    env = cli_env(tmp_path, _token(sender))
    before = server.connected_clients()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "concordctl",
        "wait",
        "general",
        "--match",
        "^approve",
        "--timeout",
        "30",
        "--json",
        "--server",
        proxy.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _started.append(proc)
    await poll_until(lambda: server.connected_clients() > before, 20, "wait connected")
    await sender.send("not yet")
    await proxy.refuse(1.0)
    await proxy.cut()
    approval = await sender.send("approve: ship it")
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0, err.decode()
    printed = json.loads(out)
    assert printed.get("chat", printed)["id"] == approval.id, printed
    assert _token(sender) not in out.decode() + err.decode()


async def _start_file_tail(
    server: EmbeddedServer, url: str, env: dict[str, str], out: Path, *args: str
) -> asyncio.subprocess.Process:
    """A ``tail --json`` appending to the regular file ``out`` (``>> out``), once connected."""
    before = server.connected_clients()
    with out.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "concordctl", "tail", "--json", "--server", url, *args,
            stdout=sink, stderr=(out.parent / "tail.err").open("ab"), env=env,
        )  # fmt: skip
    _started.append(proc)
    await poll_until(lambda: server.connected_clients() > before, 20, "the tail to connect")
    return proc


def _ids_in(path: Path) -> list[int]:
    ids = []
    for line in path.read_bytes().split(b"\n"):
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a torn last line (the next tail drops it)
        if event.get("type") == "chat_sent":
            ids.append(event["chat"]["id"])
    return ids


async def test_tail_checkpoint_to_a_file_is_exactly_once_across_sigkills(
    server: EmbeddedServer, proxy: FaultProxy, sender: Sender, tmp_path: Path
) -> None:
    # Issue 12 item 15: NDJSON appended to a regular file with --checkpoint
    # loses nothing and repeats nothing however often the tail is SIGKILLed.
    env = cli_env(tmp_path, _token(sender))
    out, ckpt = tmp_path / "log.ndjson", tmp_path / "tail.ckpt"
    args = ("--type", "chat_sent", "--checkpoint", str(ckpt))
    base = server.connected_clients()
    for _ in range(5):
        proc = await _start_file_tail(server, proxy.url, env, out, *args)
        printed = len(_ids_in(out))
        burst = asyncio.get_running_loop().create_task(sender.send_many("burst", 20))
        await poll_until(lambda n=printed: len(_ids_in(out)) >= n + 5, 20, "more chats")
        proc.kill()  # mid-burst: no clean shutdown, no last write
        await proc.wait()
        await burst
        await poll_until(lambda: server.connected_clients() <= base, 20, "the server to notice")
    last = await _start_file_tail(server, proxy.url, env, out, *args)
    sent = [c.id for c in sender.sent]
    try:
        await poll_until(lambda: set(sent) <= set(_ids_in(out)), 20, "every chat in the file")
    except AssertionError:
        missing = sorted(set(sent) - set(_ids_in(out)))
        raise AssertionError(
            f"{len(missing)} of {len(sent)} missing, first {missing[:3]}, "
            f"file max {max(_ids_in(out))}, ckpt {ckpt.read_text()}, last alive {last.returncode}"
        ) from None
    last.terminate()
    await last.wait()
    ids = [i for i in _ids_in(out) if i in set(sent)]
    assert sorted(set(ids)) == sorted(sent), "a chat was lost"
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} chats written twice"


async def test_send_to_a_server_that_drips_its_answer_stops_at_the_deadline(
    sender: Sender, tmp_path: Path
) -> None:
    # Issue 12 item 11: every byte arrives before the read timeout, so only a
    # total deadline (--timeout / CONCORD_TIMEOUT) ends it: exit 124.
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n")  # fmt: skip
        try:
            while True:
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.1)  # the scenario, not a wait: a peer that drips
        except (ConnectionError, OSError):
            pass

    dripper = await asyncio.start_server(drip, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{dripper.sockets[0].getsockname()[1]}"
    try:
        env = cli_env(tmp_path, _token(sender))
        code, _, err, took = await _send(url, env, "1", "hello", "--timeout", "1.5")
        assert code == 124, err
        assert took < 1.5 + 5, f"send took {took:.1f} s with --timeout 1.5"
        assert "within 1.5s" in err and "--timeout" in err
        _one_clear_line(err, _token(sender))
        code, _, err, took = await _send(url, env | {"CONCORD_TIMEOUT": "1"}, "1", "hello")
        assert code == 124 and took < 1 + 5, (code, took, err)
    finally:
        dripper.close()
        await dripper.wait_closed()
