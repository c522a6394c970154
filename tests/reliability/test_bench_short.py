"""Short runs of the load and soak benchmarks (tests/benchmarks/), in CI.

They assert correctness and flat memory, never absolute speed: the full
runs (200 clients x 20 senders x 60 s; 1,000,000 events) are the scripts'
defaults, and their figures are in the README.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow  # a long run: `pytest -m 'not slow'` skips it

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_short_load_every_client_gets_every_chat_in_order() -> None:
    result = _bench("bench_load").run_load(clients=20, senders=3, seconds=2.0, channels=2)
    assert not result.errors, result.errors[:10]
    assert result.chats > 0
    assert result.deliveries == result.chats * 20
    assert result.server_peak_rss_kib > 0
    assert len(result.latencies_ms) > 0


def test_short_soak_tail_json_memory_stays_flat() -> None:
    result = _bench("bench_soak").run_soak(50_000, sample_every=0.005, time_limit=100)
    assert result.exit_code == 0, result.stderr[-2000:]
    assert not result.errors, result.errors
    assert result.received == 50_000
    early, late = result.samples_between(0.1, 0.2), result.samples_between(0.8, 1.0)
    assert early >= 3 and late >= 3, f"too few RSS samples to judge ({early}, {late})"
    # Generous: start-up noise is a few MiB; a per-event leak of even 100
    # bytes would add ~5 MiB over 50,000 events on a ~60 MiB process.
    assert result.flatness < 1.25, (result.early_rss_kib, result.late_rss_kib)
