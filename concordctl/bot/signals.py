"""Running a bot in its own event loop, stopped by SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

__all__ = ["run_with_signals"]

log = logging.getLogger("concordctl.bot")


class _Stoppable(Protocol):
    def stop(self) -> None: ...


def run_with_signals(bot: _Stoppable, main: Callable[[], Awaitable[None]]) -> None:
    """Run ``main()`` in a new event loop; SIGINT/SIGTERM stop ``bot`` gracefully.

    A second signal exits at once with status 130 (a hung handler cannot
    keep the process alive).
    """

    async def wrapper() -> None:
        loop = asyncio.get_running_loop()
        received: list[str] = []

        def on_signal(name: str) -> None:
            if received:
                log.warning("%s again: exiting now", name)
                logging.shutdown()
                os._exit(130)
            received.append(name)
            log.info("%s received: stopping (again to exit at once)", name)
            bot.stop()

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal, sig.name)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass
        try:
            await main()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    asyncio.run(wrapper())
