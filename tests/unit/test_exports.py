"""The public names, pinned (as httpx's test_exported_members): a lost export or an
accidental public name fails here, on purpose. Change the table with the API."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import concordctl

PUBLIC = {
    "concordctl": [
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
        "EVENT_TYPES",
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
    ],
    "concordctl.auth": ["TokenAuth"],
    "concordctl.backoff": ["Backoff"],
    "concordctl.client": ["Client", "NameCache", "StreamState", "flatten_channels"],
    "concordctl.config": [
        "DEFAULT_PROFILE",
        "DEFAULT_TIMEOUT",
        "ENV_CA_CERT",
        "ENV_CONFIG",
        "ENV_PASSWORD",
        "ENV_PROFILE",
        "ENV_SERVER",
        "ENV_TIMEOUT",
        "ENV_TOKEN",
        "ENV_USERNAME",
        "Settings",
        "default_config_path",
        "delete_profile",
        "load_config",
        "load_profile",
        "normalize_server",
        "resolve_settings",
        "save_profile",
        "ssl_context",
        "ws_url_for",
    ],
    "concordctl.cursor": ["FUTURE_MS", "Recovery", "StreamCursor"],
    "concordctl.errors": [
        "BadRequest",
        "ConcordError",
        "Forbidden",
        "NotAuthenticated",
        "NotFound",
        "ProtocolViolation",
        "RateLimited",
        "ServerError",
        "TimedOut",
        "Unreachable",
        "UsageError",
        "redact_secrets",
        "redact_text",
        "redact_url",
    ],
    "concordctl.protocol": [
        "AUTHOR_TYPES",
        "CHANNEL_TYPES",
        "CONTENT_TYPES",
        "Channel",
        "ChannelCreated",
        "ChannelDeleted",
        "ChannelEdit",
        "ChannelsUpdated",
        "Chat",
        "ChatDeleted",
        "ChatEdit",
        "ChatEdited",
        "ChatReaction",
        "ChatReactionsUpdated",
        "ChatSent",
        "ChatTyping",
        "ChatTypingFrame",
        "ChatWritten",
        "ClientFrame",
        "Credentials",
        "EVENT_TYPES",
        "ErrorBody",
        "Event",
        "FrameError",
        "FullChannel",
        "FullUser",
        "GAP_TYPE",
        "Gap",
        "KnownEvent",
        "NewChannel",
        "NewChat",
        "NewPassword",
        "OnlineStatus",
        "Profile",
        "PromotedUser",
        "Promotion",
        "ReactionChange",
        "Reactions",
        "RegisteredUser",
        "Server",
        "ServerEdit",
        "THREAD_TYPES",
        "Token",
        "UNSET",
        "UnknownEvent",
        "UserJoined",
        "UserLeft",
        "UserStatus",
        "UserStatusUpdated",
        "decode",
        "decode_client_frame",
        "decode_event",
        "decode_known_event",
        "encode",
        "encode_client_frame",
        "encode_event",
        "event_author_id",
        "event_channel_id",
        "event_content",
        "event_thread_id",
        "to_builtins",
    ],
    "concordctl.recovery": [
        "FetchChats",
        "Recovered",
        "SNOWFLAKE_EPOCH_MS",
        "SeenChats",
        "recover_chats",
        "recover_missed_chats",
        "select_recovered",
        "snowflake_id",
        "snowflake_time",
    ],
    "concordctl.responses": [
        "MAX_BODY",
        "decode_body",
        "error_for_response",
        "is_success",
        "one_line",
        "parse_retry_after",
    ],
    "concordctl.rest": ["RestClient", "error_for_response", "parse_retry_after", "token_expiry"],
    "concordctl.retry": ["Failure", "RetryPolicy"],
    "concordctl.stream": [
        "ConnectionState",
        "EventStream",
        "SNOWFLAKE_EPOCH_MS",
        "SeenChats",
        "StreamHooks",
        "StreamOptions",
        "StreamState",
        "WarnLimiter",
        "close_reason",
        "now_ms",
        "recover_missed_chats",
        "select_recovered",
        "snowflake_id",
        "snowflake_time",
    ],
    "concordctl.streamstate": ["ConnectionState", "IllegalTransition", "StreamState", "transition"],
    "concordctl.sync": ["channels", "edit_chat", "latest_chats", "me", "react", "run", "send_chat"],
    "concordctl.tokens": ["Step", "TokenState", "renew_margin", "token_expiry", "token_is_fresh"],
    "concordctl.transport": [
        "CappedTransport",
        "DEFAULT_MAX_BODY",
        "MAX_BODY",
        "ThreadedTransport",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_library_modules_export_exactly_their_public_names(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == PUBLIC[module]
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ names {name!r}, which is not there"
    defined = [
        name
        for name, value in vars(mod).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == module
    ]
    assert sorted(set(defined) - set(mod.__all__)) == [], "public but not exported"


def test_every_name_in_any_all_exists() -> None:
    for info in pkgutil.walk_packages(concordctl.__path__, "concordctl."):
        if info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        for name in getattr(mod, "__all__", ()):
            assert hasattr(mod, name), f"{info.name}.__all__ names {name!r}, which is not there"


def test_the_lazy_top_level_names_resolve() -> None:
    for name in concordctl.__all__:
        assert getattr(concordctl, name) is not None
