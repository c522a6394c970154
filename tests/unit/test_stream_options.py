"""How plain keywords become the stream's options and hooks, without a socket."""

from __future__ import annotations

import dataclasses

import pytest

from concordctl import Client
from concordctl.backoff import Backoff
from concordctl.stream import EventStream, StreamHooks, StreamOptions


async def _token() -> str:
    return "a.b.c"


def test_defaults_are_the_documented_ones() -> None:
    opts = StreamOptions()
    assert (opts.ping_interval, opts.ping_timeout, opts.open_timeout) == (20.0, 10.0, 10.0)
    assert (opts.backoff.base, opts.backoff.cap) == (0.5, 30.0)
    assert (opts.max_queue, opts.max_size) == (64, 8 * 2**20)
    assert (opts.recovery_max_chats, opts.recovery_max_bytes) == (10_000, 16 * 2**20)
    assert StreamOptions().backoff is not opts.backoff  # no shared mutable default


def test_of_takes_a_mapping_overrides_on_top_and_a_backoff_dict() -> None:
    opts = StreamOptions.of(
        {"ping_interval": 1.0, "max_queue": 8, "backoff": {"base": 0.05, "cap": 0.5}},
        max_queue=4,
    )
    assert opts.ping_interval == 1.0
    assert opts.max_queue == 4  # the override wins
    assert opts.backoff == Backoff(base=0.05, cap=0.5)
    assert StreamOptions.of(opts, ping_timeout=2.0) == dataclasses.replace(opts, ping_timeout=2.0)
    assert StreamOptions.of(None) == StreamOptions()


def test_an_unknown_option_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="ping_intervall"):
        StreamOptions.of({}, ping_intervall=1.0)


def test_options_and_hooks_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        StreamOptions().ping_interval = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        StreamHooks().on_state = print  # type: ignore[misc]


def test_a_bare_stream_has_default_options_and_no_hooks() -> None:
    stream = EventStream("ws://127.0.0.1:9/client", get_token=_token)
    assert stream.options == StreamOptions()
    assert stream.hooks.fetch_chats is None and stream.hooks.can_renew() is False
    assert stream.cursor.margin_ms == 120_000


def test_client_events_maps_its_keywords_onto_the_options() -> None:
    client = Client(
        "http://127.0.0.1:9",
        token="a.b.c",
        stream_options={"ping_interval": 3.0, "backoff": {"base": 0.1, "cap": 1.0}},
    )
    states: list[object] = []
    stream = client.events(on_state=states.append, ping_interval=1.5, recovery_margin=5)
    assert stream.options.ping_interval == 1.5  # the call's keyword over the client's
    assert stream.options.backoff == Backoff(base=0.1, cap=1.0)
    assert stream.cursor.margin_ms == 5_000
    assert stream.hooks.on_state is not None and stream.hooks.fetch_chats is not None
    with pytest.raises(TypeError, match="nonsense"):
        client.events(nonsense=1)
