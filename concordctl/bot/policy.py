"""Policy: who may run a handler, and how often.

``author=`` and ``channel=`` take one id or name or any collection of them
(resolved to ids once, at start, by the runtime); ``check=`` takes predicates,
sync or async, given the :class:`~concordctl.bot.context.Context` of a command
(the event, for ``on``); a :class:`Cooldown` limits how often. The buckets of
a cooldown are run-time state: they live in :class:`CooldownBuckets`, one per
run, never on the registration.
"""

from __future__ import annotations

import inspect
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from concordctl.errors import UsageError

__all__ = [
    "Check",
    "Cooldown",
    "CooldownBuckets",
    "CooldownWindow",
    "checks_of",
    "passes",
    "refs_of",
]

#: A check: given the Context (commands) or the event (``on``), true to allow.
Check = Callable[[Any], "bool | Awaitable[bool]"]

Ref = int | str


def _ref(value: Any, what: str) -> Ref:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UsageError(f"{what}= takes ids or names, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        return int(text) if text.isdigit() else text
    return value


def refs_of(value: Any, what: str) -> tuple[Ref, ...]:
    """``"general"``, ``123`` or any collection of them, as a tuple ("123" becomes 123)."""
    if value is None:
        return ()
    if isinstance(value, int | str):
        return (_ref(value, what),)
    if isinstance(value, Iterable):
        found = tuple(_ref(v, what) for v in value)
        if not found:
            raise UsageError(f"{what}= is an empty collection: nothing would ever match")
        return found
    raise UsageError(f"{what}= takes an id, a name or a collection of them, got {value!r}")


def checks_of(check: Check | Iterable[Check] | None) -> tuple[Check, ...]:
    if check is None:
        return ()
    if callable(check):
        return (check,)
    found = tuple(check)
    for c in found:
        if not callable(c):
            raise UsageError(f"check= takes functions, got {c!r}")
    return found


async def passes(checks: tuple[Check, ...], arg: Any) -> bool:
    """True when every check allows ``arg`` (they run in order and stop at the first no)."""
    for check in checks:
        verdict = check(arg)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if not verdict:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Cooldown:
    """At most ``rate`` runs per ``per`` seconds, counted per user, channel or for everyone.

    ``Cooldown(1, per=30, key="user")``: each user may run the command once every 30 s.
    """

    rate: int
    per: float
    key: Literal["user", "channel", "global"] = "user"

    def __post_init__(self) -> None:
        if self.rate < 1 or self.per <= 0:
            raise UsageError("Cooldown(rate, per=SECONDS) needs rate >= 1 and per > 0")
        if self.key not in ("user", "channel", "global"):
            raise UsageError("Cooldown key= must be 'user', 'channel' or 'global'")


class CooldownWindow:
    """One cooldown's buckets: the run times each user, channel (or everyone) has seen.

    A sliding window: a run is allowed while fewer than ``rate`` runs fall in
    the last ``per`` seconds, and then counted. Every run is counted, however
    large ``rate`` is.
    """

    __slots__ = ("_hits", "_per", "_rate", "key")

    def __init__(self, cd: Cooldown) -> None:
        self.key = cd.key
        self._per = cd.per
        self._rate = cd.rate
        self._hits: dict[int | None, deque[float]] = {}  # bucket (a user, a channel, None)

    def bucket(self, user: int | None, channel: int | None) -> int | None:
        """The bucket a run by ``user`` in ``channel`` counts in (None: everyone's)."""
        key = self.key
        return user if key == "user" else channel if key == "channel" else None

    def take(self, bucket: int | None, now: float) -> float:
        """0 and the run counted when allowed, else the seconds until it would be."""
        hits = self._hits.get(bucket)
        if hits is None:
            hits = self._hits[bucket] = deque()
        per = self._per
        while hits and now - hits[0] >= per:
            hits.popleft()
        if len(hits) >= self._rate:
            return per - (now - hits[0])
        hits.append(now)
        return 0.0


class CooldownBuckets:
    """Every cooldown's window in one run, by its owner (the route it belongs to)."""

    def __init__(self) -> None:
        self._windows: dict[object, CooldownWindow] = {}

    def window(self, owner: object, cd: Cooldown) -> CooldownWindow:
        """``owner``'s window (made on first use); a command plan keeps it at hand."""
        found = self._windows.get(owner)
        if found is None:
            found = self._windows[owner] = CooldownWindow(cd)
        return found

    def retry_after(
        self, owner: object, cd: Cooldown, user: int | None, channel: int | None, now: float
    ) -> float:
        """0 and the run counted when allowed, else the seconds until it would be."""
        window = self.window(owner, cd)
        return window.take(window.bucket(user, channel), now)


def seconds_text(seconds: float) -> str:
    """Whole seconds, rounded up, for "again in N s"."""
    return str(max(1, math.ceil(seconds)))
