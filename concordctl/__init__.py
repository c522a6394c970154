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
    "StreamState": "concordctl.stream",
}

if TYPE_CHECKING:  # pragma: no cover
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
    from concordctl.stream import EventStream, StreamState


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'concordctl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
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
