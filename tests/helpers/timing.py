"""The suite's one timing unit, as websockets' ``tests/utils.py`` has it.

Every timeout a test waits on is a multiple of :data:`UNIT` (seconds), so a slow
machine changes one number: ``CONCORD_TESTS_TIMEOUT_FACTOR=3 pytest``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

FACTOR = float(os.environ.get("CONCORD_TESTS_TIMEOUT_FACTOR", "1"))
UNIT = 1.0 * FACTOR
"""One second, scaled by ``CONCORD_TESTS_TIMEOUT_FACTOR``."""


def wait_until(condition: Callable[[], object], timeout: float = 5 * UNIT, what: str = "") -> None:
    """Poll ``condition`` (no fixed sleep: a short back-off) until true or fail the test."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what or condition}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


async def async_wait_until(
    condition: Callable[[], object | Awaitable[object]],
    timeout: float = 5 * UNIT,  # noqa: ASYNC109 (a test helper, like wait_until)
    what: str = "",
) -> None:
    """The async twin of :func:`wait_until`; ``condition`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what or condition}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
