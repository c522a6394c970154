"""Helpers for the bot tests: events made in memory and a client that records writes."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

from concordctl.errors import NotFound
from concordctl.protocol import Chat, ChatSent, Event, FullUser, Profile, UserStatus
from tests.helpers.timing import UNIT, async_wait_until

BOT_ID = 900
_ids = itertools.count(1000)

CHANNELS = {"general": 1, "random": 2, "ops": 3}
USERS = {"alice": 10, "bob": 11, "bot": BOT_ID}


def chat(
    content: str,
    *,
    channel: int = 1,
    author: int = 10,
    thread: int | None = None,
    recovered: bool = False,
    chat_id: int | None = None,
) -> ChatSent:
    return ChatSent(
        chat=Chat(
            id=chat_id if chat_id is not None else next(_ids),
            created_at=1_700_000_000_000,
            author_id=author,
            channel_id=channel,
            thread_id=thread,
            content=content,
            edited=False,
            reactions={},
        ),
        recovered=recovered,
    )


async def from_list(events: Iterable[Event], *, hang: bool = False) -> AsyncIterator[Event]:
    for ev in events:
        yield ev
        await asyncio.sleep(0)  # a yield to the loop between events, as a socket's reads are
    if hang:
        await asyncio.Event().wait()


def _user(uid: int, name: str) -> FullUser:
    return FullUser(
        id=uid,
        username=name,
        profile=Profile(created_at=0, nickname=name, bio=None, avatar_id=None),
        status=UserStatus(online_status="ONLINE"),
    )


class FakeClient:
    """The parts of Client a bot uses; writes are recorded, not sent."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, Any, ...]] = []  # type: ignore[misc]
        self.lookups: list[tuple[str, Any]] = []
        self.sent = asyncio.Queue[Chat]()

    async def me(self) -> FullUser:
        return _user(BOT_ID, "bot")

    async def channel(self, ref: int | str) -> Any:
        self.lookups.append(("channel", ref))
        name = str(ref).lstrip("#")
        if name not in CHANNELS:
            raise NotFound(f"no channel {name!r}", suggestions=list(CHANNELS))

        class _C:
            id = CHANNELS[name]

        return _C()

    async def user(self, ref: int | str) -> FullUser:
        self.lookups.append(("user", ref))
        if ref not in USERS:
            raise NotFound(f"no user {ref!r}")
        return _user(USERS[str(ref)], str(ref))

    async def send_chat(
        self, channel: int | str, content: str, *, thread_id: int | None = None, sent_at: Any = None
    ) -> Chat:
        self.writes.append(("send", channel, content))
        c = chat(content, channel=int(channel), author=BOT_ID, thread=thread_id).chat
        self.sent.put_nowait(c)
        return c

    async def react(self, chat_id: int, reaction: str) -> None:
        self.writes.append(("react", chat_id, reaction))

    async def typing(self, channel: int | str, thread_id: int | None = None) -> None:
        self.writes.append(("typing", channel))


async def eventually(condition: Callable[[], bool], within: float = 10 * UNIT) -> None:
    """Wait until ``condition()`` holds (state changed by other tasks)."""
    await async_wait_until(condition, within)


class BotProcess:
    """``concordctl run ...`` as a subprocess, its stderr collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        self._readers = [
            asyncio.create_task(self._read(proc.stderr, self.stderr)),
            asyncio.create_task(self._read(proc.stdout, self.stdout)),
        ]

    @classmethod
    async def start(cls, *args: str, env: dict[str, str], cwd: str | None = None) -> BotProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "concordctl",
            *args,
            env=env,
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    @staticmethod
    async def _read(stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        async for line in stream:
            into.append(line.decode(errors="replace").rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.stderr)

    async def wait_for_log(self, text: str, within: float = 15 * UNIT) -> None:
        try:
            await eventually(lambda: text in self.log or self.proc.returncode is not None, within)
        except AssertionError:
            raise AssertionError(f"no {text!r} in the bot's log:\n{self.log}") from None
        assert text in self.log, f"bot exited ({self.proc.returncode}) before {text!r}:\n{self.log}"

    async def wait(self, within: float = 20 * UNIT) -> int:
        async with asyncio.timeout(within):
            code = await self.proc.wait()
            await asyncio.gather(*self._readers)
        return code

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


def cli_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a subprocess: no user config, no inherited CONCORD_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
    env["CONCORD_CONFIG"] = str(tmp / "no-config.toml")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env
