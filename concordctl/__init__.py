"""concordctl: command line, async client library and bot framework for Concord.

Public names are importable from here. The heavy ones (the client, the bot)
are imported on first use, so ``concordctl send`` does not pay for the
websocket or server stack at start-up.
"""

from __future__ import annotations

# Not `from typing import TYPE_CHECKING`: typing is a third of what
# `concordctl --version` would import; mypy and pyright know this spelling.
TYPE_CHECKING = False

__version__ = "0.1.0"

# name -> module that defines it, imported on first attribute access. The
# errors and the wire models are lazy too: `concordctl --version` imports this
# package, and msgspec (under concordctl.protocol) alone costs it about 40 ms.
_LAZY: dict[str, str] = {
    "BadRequest": "concordctl.errors",
    "ConcordError": "concordctl.errors",
    "Forbidden": "concordctl.errors",
    "NotAuthenticated": "concordctl.errors",
    "NotFound": "concordctl.errors",
    "ProtocolViolation": "concordctl.errors",
    "RateLimited": "concordctl.errors",
    "ServerError": "concordctl.errors",
    "TimedOut": "concordctl.errors",
    "Unreachable": "concordctl.errors",
    "UsageError": "concordctl.errors",
    "EVENT_TYPES": "concordctl.protocol",
    "Channel": "concordctl.protocol",
    "ChannelCreated": "concordctl.protocol",
    "ChannelDeleted": "concordctl.protocol",
    "ChannelsUpdated": "concordctl.protocol",
    "Chat": "concordctl.protocol",
    "ChatDeleted": "concordctl.protocol",
    "ChatEdited": "concordctl.protocol",
    "ChatReactionsUpdated": "concordctl.protocol",
    "ChatSent": "concordctl.protocol",
    "ChatTyping": "concordctl.protocol",
    "Event": "concordctl.protocol",
    "FrameError": "concordctl.protocol",
    "FullChannel": "concordctl.protocol",
    "FullUser": "concordctl.protocol",
    "Gap": "concordctl.protocol",
    "Reactions": "concordctl.protocol",
    "Server": "concordctl.protocol",
    "UnknownEvent": "concordctl.protocol",
    "UserJoined": "concordctl.protocol",
    "UserLeft": "concordctl.protocol",
    "UserStatusUpdated": "concordctl.protocol",
    "decode_event": "concordctl.protocol",
    "encode_event": "concordctl.protocol",
    "ArgumentError": "concordctl.bot",
    "Bot": "concordctl.bot",
    "Call": "concordctl.bot",
    "Cooldown": "concordctl.bot",
    "Duration": "concordctl.bot",
    "HandlerError": "concordctl.bot",
    "Rest": "concordctl.bot",
    "Router": "concordctl.bot",
    "User": "concordctl.bot",
    "Client": "concordctl.client",
    "Context": "concordctl.bot",
    "SendLoopError": "concordctl.bot",
    "SyncContext": "concordctl.bot",
    "EventStream": "concordctl.stream",
    "Settings": "concordctl.config",
    "StreamState": "concordctl.streamstate",
    "ConnectionState": "concordctl.streamstate",
}

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from concordctl.bot import (
        ArgumentError,
        Bot,
        Call,
        Context,
        Cooldown,
        Duration,
        HandlerError,
        Rest,
        Router,
        SendLoopError,
        SyncContext,
        User,
    )
    from concordctl.client import Client
    from concordctl.config import Settings
    from concordctl.errors import (
        BadRequest,
        ConcordError,
        Forbidden,
        NotAuthenticated,
        NotFound,
        ProtocolViolation,
        RateLimited,
        ServerError,
        TimedOut,
        Unreachable,
        UsageError,
    )
    from concordctl.protocol import (
        EVENT_TYPES,
        Channel,
        ChannelCreated,
        ChannelDeleted,
        ChannelsUpdated,
        Chat,
        ChatDeleted,
        ChatEdited,
        ChatReactionsUpdated,
        ChatSent,
        ChatTyping,
        Event,
        FrameError,
        FullChannel,
        FullUser,
        Gap,
        Reactions,
        Server,
        UnknownEvent,
        UserJoined,
        UserLeft,
        UserStatusUpdated,
        decode_event,
        encode_event,
    )
    from concordctl.stream import EventStream
    from concordctl.streamstate import ConnectionState, StreamState


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'concordctl' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "EVENT_TYPES",
    "ArgumentError",
    "BadRequest",
    "Bot",
    "Call",
    "Channel",
    "ChannelCreated",
    "ChannelDeleted",
    "ChannelsUpdated",
    "Chat",
    "ChatDeleted",
    "ChatEdited",
    "ChatReactionsUpdated",
    "ChatSent",
    "ChatTyping",
    "Client",
    "ConcordError",
    "ConnectionState",
    "Context",
    "Cooldown",
    "Duration",
    "Event",
    "EventStream",
    "Forbidden",
    "FrameError",
    "FullChannel",
    "FullUser",
    "Gap",
    "HandlerError",
    "NotAuthenticated",
    "NotFound",
    "ProtocolViolation",
    "RateLimited",
    "Reactions",
    "Rest",
    "Router",
    "SendLoopError",
    "Server",
    "ServerError",
    "Settings",
    "StreamState",
    "SyncContext",
    "TimedOut",
    "UnknownEvent",
    "Unreachable",
    "UsageError",
    "User",
    "UserJoined",
    "UserLeft",
    "UserStatusUpdated",
    "__version__",
    "decode_event",
    "encode_event",
]
