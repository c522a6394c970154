"""The slow half of the CLI fault tests, in a file of its own so that test
distribution puts it beside the fast ones (each waits out a real timeout).

* tail: its keepalive (``--keepalive``: a ping after that many silent seconds,
  half as long for the pong) bounds how long a silent socket goes unnoticed.
* send: the command's deadline (``CONCORD_TIMEOUT``) bounds a silent server.

Both run with short settings (1 and 2 units); the defaults (20 s, 10 s) are checked
by test_the_defaults_of_the_bounds_are_documented.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from streamcheck import Sender
from test_fault_cli import (
    REST_TIMEOUT,
    Tail,
    _assert_once_in_order,
    _one_clear_line,
    _send,
    _token,
    cli_env,
    no_leftover_processes,
)

from concordctl.server import EmbeddedServer
from tests.helpers.timing import UNIT

pytestmark = pytest.mark.slow  # a long run: `pytest -m 'not slow'` skips it

__all__ = ["no_leftover_processes"]  # a fixture of test_fault_cli


KEEPALIVE = 1 * UNIT  # tail --keepalive: a ping after 1 silent unit, half a unit for the pong
DEADLINE = 2 * UNIT  # CONCORD_TIMEOUT: the deadline of send, and of each request of tail


async def test_tail_notices_a_silent_socket_within_its_keepalive_bound(
    server: EmbeddedServer, proxy: FaultProxy, sender: Sender, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, _token(sender)) | {"CONCORD_TIMEOUT": str(DEADLINE)}
    tail = await Tail.start(
        server, proxy.url, env, "--type", "chat_sent", "--count", "4", "--keepalive", str(KEEPALIVE)
    )
    first = [await sender.send("before-stall")]
    await tail.wait_for_chats(first, 15 * UNIT)
    stalled_at = time.monotonic()
    proxy.stall(existing_only=True)
    missed = await sender.send_many("stalled", 3)
    bound = 1.5 * KEEPALIVE + 4 * UNIT  # ping, pong timeout, the reconnect line
    detected = await tail.wait_for_stderr("reconnecting", stalled_at, bound + 5 * UNIT)
    assert detected - stalled_at <= bound
    await tail.wait_for_chats(missed, DEADLINE + 10 * UNIT)
    assert await tail.finish() == 0
    _assert_once_in_order(tail, sender.sent)


async def test_send_to_a_silent_server_times_out_with_124(
    proxy: FaultProxy, sender: Sender, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, _token(sender)) | {"CONCORD_TIMEOUT": str(DEADLINE)}
    proxy.stall()  # the connection opens, the request goes nowhere
    code, _, err, took = await _send(proxy.url, env, str(sender.channel_id), "hello")
    assert code == 124, err
    assert took < DEADLINE + 5 * UNIT, f"send took {took:.1f} s against a silent server"
    _one_clear_line(err, _token(sender))


def test_the_defaults_of_the_bounds_are_documented() -> None:
    import os
    import subprocess
    import sys

    from concordctl.cli.connection import DEFAULT_TIMEOUT
    from concordctl.stream import StreamOptions

    assert (StreamOptions().ping_interval, StreamOptions().ping_timeout) == (20.0, 10.0)
    assert DEFAULT_TIMEOUT == REST_TIMEOUT == 10.0
    help_text = subprocess.run(
        [sys.executable, "-m", "concordctl", "tail", "--help"],
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    keepalive = help_text.split("--keepalive", 1)[1].split("--", 1)[0]
    assert "default: 20.0" in " ".join(keepalive.split())
