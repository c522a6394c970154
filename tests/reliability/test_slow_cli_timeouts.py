"""The slow half of the CLI fault tests, in a file of its own so that test
distribution puts it beside the fast ones (each waits out a real timeout).

* tail: the stream's default keepalive (a ping every 20 s, 10 s for the pong)
  bounds how long a silent socket goes unnoticed; tail has no flag to change it.
* send: the client's default REST timeout (10 s) bounds a silent server.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from streamcheck import Sender
from test_fault_cli import (
    REST_TIMEOUT,
    TAIL_DEAD_SOCKET_BOUND,
    Tail,
    _assert_once_in_order,
    _one_clear_line,
    _send,
    _token,
    cli_env,
    no_leftover_processes,
)

from concordctl.server import EmbeddedServer

pytestmark = pytest.mark.slow  # a long run: `pytest -m 'not slow'` skips it

__all__ = ["no_leftover_processes"]  # a fixture of test_fault_cli


async def test_tail_notices_a_silent_socket_within_its_keepalive_bound(
    server: EmbeddedServer, proxy: FaultProxy, sender: Sender, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, _token(sender))
    tail = await Tail.start(server, proxy.url, env, "--type", "chat_sent", "--count", "4")
    first = [await sender.send("before-stall")]
    await tail.wait_for_chats(first, 15)
    stalled_at = time.monotonic()
    proxy.stall(existing_only=True)
    missed = await sender.send_many("stalled", 3)
    detected = await tail.wait_for_stderr("reconnecting", stalled_at, TAIL_DEAD_SOCKET_BOUND + 5)
    assert detected - stalled_at <= TAIL_DEAD_SOCKET_BOUND
    await tail.wait_for_chats(missed, REST_TIMEOUT + 10)
    assert await tail.finish() == 0
    _assert_once_in_order(tail, sender.sent)


async def test_send_to_a_silent_server_times_out_with_124(
    proxy: FaultProxy, sender: Sender, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, _token(sender))
    proxy.stall()  # the connection opens, the request goes nowhere
    code, _, err, took = await _send(proxy.url, env, str(sender.channel_id), "hello")
    assert code == 124, err
    assert took < REST_TIMEOUT + 15, f"send took {took:.1f} s against a silent server"
    _one_clear_line(err, _token(sender))
