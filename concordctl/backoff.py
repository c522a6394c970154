"""Capped exponential backoff with jitter, shared by REST retries and reconnects.

Jitter spreads the retries of many clients that lost the same server at the
same moment, so a restarted server is not hit by all of them at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """``delay(n)`` for the n-th retry (0-based): base*2^n capped, times [1-jitter, 1].

    ``jitter=0.5`` ("equal jitter") keeps every delay at least half the nominal
    one, so the cap really bounds how fast a client hammers a dead server.
    """

    base: float = 0.5
    cap: float = 30.0
    jitter: float = 0.5
    rand: Callable[[], float] = field(default=random.random, repr=False)

    def nominal(self, attempt: int) -> float:
        # min() before the power would overflow for huge attempt numbers
        return min(self.cap, self.base * (2.0 ** min(attempt, 60)))

    def delay(self, attempt: int) -> float:
        nominal = self.nominal(attempt)
        return nominal * (1.0 - self.jitter * self.rand())
