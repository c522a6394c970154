"""Decode cost of one chat_sent frame: protocol.decode_event against json.loads.

The floor is the standard library's json.loads of the same bytes into plain
dicts (no validation, no typed objects). Prints the ratio; lower is better.
Usage: python tests/benchmarks/bench_protocol.py [N]
"""

from __future__ import annotations

import json
import sys
import time

from concordctl.protocol import decode_event

FRAME = json.dumps(
    {
        "type": "chat_sent",
        "chat": {
            "id": 544123421693575168,
            "createdAt": 1764110000000,
            "authorId": 544123421693575169,
            "channelId": 544123421693575170,
            "threadId": None,
            "content": "deploy of build 1234 finished in 3m12s ✅",
            "edited": False,
            "reactions": {"👍": 2},
        },
    },
    ensure_ascii=False,
).encode()


def per_call(fn: object, n: int) -> float:
    call = fn  # type: ignore[assignment]
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(n):
            call(FRAME)  # type: ignore[operator]
        best = min(best, time.process_time() - start)
    return best / n


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    floor = per_call(json.loads, n)
    ours = per_call(decode_event, n)
    print(f"json.loads (floor): {floor * 1e6:.2f} us/frame")
    print(f"decode_event:       {ours * 1e6:.2f} us/frame  ratio {ours / floor:.2f}")


if __name__ == "__main__":
    main()
