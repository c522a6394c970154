"""concordctl: command line, async client library and bot framework for Concord.

Public names are importable from here. The heavy ones (the client, the bot)
are imported on first use, so ``concordctl send`` does not pay for the
websocket or server stack at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

__version__ = "0.1.0"

# name -> module that defines it, imported on first attribute access
_LAZY: dict[str, str] = {
    "Bot": "concordctl.bot",
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
    from concordctl.bot import Bot, Context, SendLoopError, SyncContext
    from concordctl.client import Client
    from concordctl.config import Settings
    from concordctl.stream import EventStream
    from concordctl.streamstate import ConnectionState, StreamState


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'concordctl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "EVENT_TYPES",
    "BadRequest",
    "Bot",
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
    "Event",
    "EventStream",
    "Forbidden",
    "FrameError",
    "FullChannel",
    "FullUser",
    "Gap",
    "NotAuthenticated",
    "NotFound",
    "ProtocolViolation",
    "RateLimited",
    "Reactions",
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
    "UserJoined",
    "UserLeft",
    "UserStatusUpdated",
    "__version__",
    "decode_event",
    "encode_event",
]
