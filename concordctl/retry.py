"""When a failed request is tried again, and after how long: decisions only, no I/O.

A request may be repeated when repeating cannot do a thing twice:

* the connection could not even be opened (refused, connect timeout): nothing
  was sent, so any method may retry;
* an idempotent request (GET, PATCH, DELETE, the reaction POST) lost its
  connection, or got 502/503/504 or 429 (honouring ``Retry-After`` up to
  ``max_retry_after`` seconds; a longer wait is the caller's, as RateLimited).

A chat (``POST``) is never sent twice by a blind retry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from concordctl.backoff import Backoff

__all__ = ["Failure", "RetryPolicy"]

#: ``unsent``: the connection was never opened; ``lost``: it failed after the
#: request may have left; ``status``: the server answered with an error status.
Failure = Literal["unsent", "lost", "status"]

_RETRY_STATUS = frozenset((502, 503, 504, 429))


@dataclass
class RetryPolicy:
    """``delay(...)``: seconds to wait before retry number ``attempt + 1``, or None: give up."""

    max_retries: int = 3
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.2, cap=5.0))
    max_retry_after: float = 30.0

    def delay(
        self,
        attempt: int,
        failure: Failure,
        *,
        idempotent: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> float | None:
        if attempt >= self.max_retries:
            return None
        if failure == "lost" and not idempotent:
            return None
        if failure == "status":
            if not idempotent or status not in _RETRY_STATUS:
                return None
            if retry_after is not None and retry_after > self.max_retry_after:
                return None
        wait = self.backoff.delay(attempt)
        return max(wait, retry_after) if retry_after is not None else wait
