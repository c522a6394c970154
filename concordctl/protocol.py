"""The Concord wire format, and nothing else.

Typed models of every REST shape and every websocket message in the contract
(``shared/reference/concord-api.md``), with one decoder and one encoder per
direction. The client and the embedded server both use this module, so the
wire is written down once. There is no I/O here: bytes in, objects out.

Conventions:

* Python attributes are snake_case, the wire is camelCase (``rename="camel"``).
* Ids are plain ``int`` at any size; they are never converted to float.
* Reactions are opaque strings (ZWJ emoji and variation selectors included).
* ``encode_event(decode_event(frame))`` gives back the same JSON object for
  every frame of the contract.
* An event type this module does not know decodes to :class:`UnknownEvent`
  (servers add types); a frame that is not a JSON object with a textual
  ``type``, or a known type with the wrong shape, raises :class:`FrameError`.

Models are ``msgspec`` structs: they decode and validate in one pass, which
matters because every event of the stream goes through here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "AUTHOR_TYPES",
    "CHANNEL_TYPES",
    "CONTENT_TYPES",
    "EVENT_TYPES",
    "GAP_TYPE",
    "THREAD_TYPES",
    "UNSET",
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
    "ErrorBody",
    "Event",
    "FrameError",
    "FullChannel",
    "FullUser",
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
    "Token",
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
]

OnlineStatus: TypeAlias = Literal["ONLINE", "OFFLINE"]
T = TypeVar("T")


class FrameError(ValueError):
    """A frame or body that is not valid JSON or not of the expected shape."""


class _Model(msgspec.Struct, rename="camel"):
    """Base of every wire model: camelCase on the wire."""


# --------------------------------------------------------------------------
# REST shapes
# --------------------------------------------------------------------------


class Chat(_Model):
    id: int
    created_at: int
    author_id: int
    channel_id: int
    thread_id: int | None
    content: str
    edited: bool
    reactions: dict[str, int]


class Channel(_Model):
    id: int
    parent_channel_id: int | None
    ordinality: int
    name: str
    description: str | None
    capabilities: list[str] | None
    created_at: int
    created_by_user_id: int


class FullChannel(_Model):
    id: int
    ordinality: int
    name: str
    description: str | None
    capabilities: list[str] | None
    created_at: int
    created_by_user_id: int
    children: list[FullChannel]


class Profile(_Model):
    created_at: int
    nickname: str
    bio: str | None
    avatar_id: int | None


class UserStatus(_Model):
    online_status: OnlineStatus


class FullUser(_Model):
    id: int
    username: str
    profile: Profile
    status: UserStatus


class Server(_Model):
    name: str
    description: str | None
    icon_id: int | None
    default_channel_id: int | None


class Reactions(_Model):
    reacting_users: dict[str, list[int]]
    reactions: dict[str, int]


class Token(_Model):
    token: str

    def __repr__(self) -> str:  # a token never appears in a repr
        return "Token(token='***')"


class RegisteredUser(_Model):
    id: int
    username: str


class ErrorBody(_Model, omit_defaults=True):
    """Spring Boot's default error body; ``message`` is often empty or null."""

    path: str
    status: int
    error: str
    message: str | None = None
    timestamp: str | UnsetType = UNSET
    request_id: str | UnsetType = UNSET


# Request bodies. Optional fields are UNSET and left out of the JSON.


class Credentials(_Model):
    """``POST /tokens`` and ``POST /users/register``."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***')"


class NewPassword(_Model):
    new_password: str

    def __repr__(self) -> str:
        return "NewPassword(new_password='***')"


class NewChat(_Model, omit_defaults=True):
    content: str
    sent_at: int | UnsetType = UNSET
    thread_id: int | UnsetType | None = UNSET


class ChatEdit(_Model):
    content: str


class ReactionChange(_Model):
    reaction: str
    adding: bool


# concordctl's extensions of the contract (agreed by the team; upstream lacks them).


class ChannelEdit(_Model, omit_defaults=True):
    """``PATCH /channels/{id}``: the fields to change; UNSET ones stay as they are."""

    name: str | UnsetType = UNSET
    description: str | UnsetType | None = UNSET


class ServerEdit(_Model, omit_defaults=True):
    """``PATCH /server``."""

    name: str | UnsetType = UNSET
    description: str | UnsetType | None = UNSET


class Promotion(_Model):
    """``POST /admin/users/promote``."""

    username: str


class PromotedUser(_Model):
    """The answer to a promotion."""

    id: int
    username: str
    admin: bool


class NewChannel(_Model, omit_defaults=True):
    name: str
    description: str | UnsetType | None = UNSET
    parent_channel_id: int | UnsetType | None = UNSET
    ordinality: int | UnsetType | None = UNSET
    capabilities: list[str] | UnsetType | None = UNSET


# --------------------------------------------------------------------------
# Websocket: server to client
# --------------------------------------------------------------------------


class _Event(_Model, tag_field="type"):
    """Base of the server-to-client events; ``type`` is the wire name."""

    type: ClassVar[str]


class ChatSent(_Event, tag="chat_sent", omit_defaults=True):
    chat: Chat
    # Not from the server: set by the client on chats it recovered over REST
    # after a reconnect. Left out of the JSON unless true.
    recovered: bool = False


class ChatEdited(_Event, tag="chat_edited"):
    chat_id: int
    channel_id: int
    thread_id: int | None
    content: str


class ChatDeleted(_Event, tag="chat_deleted"):
    chat_id: int
    channel_id: int
    thread_id: int | None


class ChatReactionsUpdated(_Event, tag="chat_reactions_updated"):
    chat_id: int
    channel_id: int
    thread_id: int | None
    reactions: dict[str, int]


class ChatTyping(_Event, tag="chat_typing"):
    user_id: int
    channel_id: int
    thread_id: int | None
    sent_at: int


class ChannelCreated(_Event, tag="channel_created"):
    channel: Channel


class ChannelDeleted(_Event, tag="channel_deleted"):
    channel_id: int


class ChannelsUpdated(_Event, tag="channels_updated"):
    channel: Channel


class UserJoined(_Event, tag="user_joined"):
    user_id: int


class UserLeft(_Event, tag="user_left"):
    user_id: int


class UserStatusUpdated(_Event, tag="user_status_updated"):
    user_id: int
    status: OnlineStatus


GAP_TYPE = "concordctl.gap"


class Gap(_Event, tag=GAP_TYPE, omit_defaults=True):
    """Synthetic, never sent by a server: the stream was disconnected.

    Between ``since`` and ``until`` (epoch milliseconds) edits, deletions,
    reactions and typing may have been missed. Chats sent meanwhile were
    recovered and arrive as ``ChatSent`` with ``recovered=True``, unless
    ``unrecovered`` is true: then recovery stopped at its limit (chats or
    bytes per gap) and older chats of the interval were not recovered either
    (read them with ``history`` or ``search``). Left out of the JSON unless true.
    """

    since: int
    until: int
    unrecovered: bool = False


KnownEvent: TypeAlias = (
    ChatSent
    | ChatEdited
    | ChatDeleted
    | ChatReactionsUpdated
    | ChatTyping
    | ChannelCreated
    | ChannelDeleted
    | ChannelsUpdated
    | UserJoined
    | UserLeft
    | UserStatusUpdated
    | Gap
)


class UnknownEvent:
    """An event whose ``type`` this version does not know.

    ``data`` is the whole object as received, so nothing is lost when it is
    passed on (``encode_event`` writes it back unchanged).
    """

    __slots__ = ("data", "type")

    def __init__(self, type: str, data: dict[str, Any]) -> None:
        self.type = type
        self.data = data

    def __repr__(self) -> str:
        return f"UnknownEvent(type={self.type!r}, data={self.data!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UnknownEvent):
            return NotImplemented
        return self.type == other.type and self.data == other.data

    __hash__ = None  # type: ignore[assignment]


Event: TypeAlias = KnownEvent | UnknownEvent

EVENT_CLASSES: dict[str, type[KnownEvent]] = {
    str(cls.__struct_config__.tag): cls for cls in KnownEvent.__args__
}
for _tag, _cls in EVENT_CLASSES.items():
    _cls.type = _tag

#: Every event type name this module knows, the synthetic gap included.
EVENT_TYPES: frozenset[str] = frozenset(EVENT_CLASSES)


# --------------------------------------------------------------------------
# What an event is about: the one answer for every layer
# --------------------------------------------------------------------------


#: The event types that carry each answer (checked when a bot registers a filter).
CHANNEL_TYPES: frozenset[str] = frozenset(
    ("chat_sent", "chat_edited", "chat_deleted", "chat_reactions_updated", "chat_typing",
     "channel_created", "channel_deleted", "channels_updated")
)  # fmt: skip
AUTHOR_TYPES: frozenset[str] = frozenset(
    ("chat_sent", "chat_typing", "user_joined", "user_left", "user_status_updated")
)
THREAD_TYPES: frozenset[str] = frozenset(
    ("chat_sent", "chat_edited", "chat_deleted", "chat_reactions_updated", "chat_typing")
)
CONTENT_TYPES: frozenset[str] = frozenset(("chat_sent", "chat_edited"))

# Written for speed (the bot asks these of every event): exact classes, no isinstance chains.
_CHANNEL_ID_FIELD = (ChatEdited, ChatDeleted, ChatReactionsUpdated, ChatTyping, ChannelDeleted)
_USER_ID_FIELD = (ChatTyping, UserJoined, UserLeft, UserStatusUpdated)
_THREAD_ID_FIELD = (ChatEdited, ChatDeleted, ChatReactionsUpdated, ChatTyping)


def _raw_id(event: UnknownEvent, key: str) -> int | None:
    value = event.data.get(key)
    return value if type(value) is int else None


def event_channel_id(event: Event) -> int | None:
    """The channel an event is in or about; None for events of no channel.

    ``channel_created``, ``channels_updated`` and ``channel_deleted`` are about
    their channel; user and gap events belong to none; an event of a type this
    version does not know answers with its ``channelId``, if it has one.
    """
    cls = event.__class__
    if cls is ChatSent:
        return event.chat.channel_id  # type: ignore[union-attr]
    if cls in _CHANNEL_ID_FIELD:
        return event.channel_id  # type: ignore[union-attr]
    if cls is ChannelCreated or cls is ChannelsUpdated:
        return event.channel.id  # type: ignore[union-attr]
    if cls is UnknownEvent:
        return _raw_id(event, "channelId")  # type: ignore[arg-type]
    return None


def event_author_id(event: Event) -> int | None:
    """Who made the event happen, when it says: a chat's author, the typist, the user
    who joined, left or changed status (an unknown type: its ``userId``)."""
    cls = event.__class__
    if cls is ChatSent:
        return event.chat.author_id  # type: ignore[union-attr]
    if cls in _USER_ID_FIELD:
        return event.user_id  # type: ignore[union-attr]
    if cls is UnknownEvent:
        return _raw_id(event, "userId")  # type: ignore[arg-type]
    return None


def event_thread_id(event: Event) -> int | None:
    """The thread (a chat id) the event is in; None outside a thread (and for the
    types of no thread: ask ``event.type in THREAD_TYPES`` to tell them apart)."""
    cls = event.__class__
    if cls is ChatSent:
        return event.chat.thread_id  # type: ignore[union-attr]
    if cls in _THREAD_ID_FIELD:
        return event.thread_id  # type: ignore[union-attr]
    return None


def event_content(event: Event) -> str | None:
    """The text of a chat event (sent or edited); None for the others."""
    cls = event.__class__
    if cls is ChatSent:
        return event.chat.content  # type: ignore[union-attr]
    if cls is ChatEdited:
        return event.content  # type: ignore[union-attr]
    return None


# --------------------------------------------------------------------------
# Websocket: client to server
# --------------------------------------------------------------------------


class _ClientFrame(_Model, tag_field="type"):
    """Base of the client-to-server frames; UNSET fields are left out."""

    type: ClassVar[str]


class ChatTypingFrame(_ClientFrame, tag="chat_typing"):
    channel_id: int
    thread_id: int | None = None
    sent_at: int | UnsetType = UNSET


class ChatWritten(_ClientFrame, tag="chat_written"):
    channel_id: int
    content: str
    thread_id: int | None = None
    sent_at: int | UnsetType = UNSET


class ChatReaction(_ClientFrame, tag="chat_reaction"):
    chat_id: int
    reaction: str
    adding: bool = True


ClientFrame: TypeAlias = ChatTypingFrame | ChatWritten | ChatReaction

for _fcls in (ChatTypingFrame, ChatWritten, ChatReaction):
    _fcls.type = str(_fcls.__struct_config__.tag)


# --------------------------------------------------------------------------
# Decoding and encoding
# --------------------------------------------------------------------------

_event_decoder: msgspec.json.Decoder[KnownEvent] = msgspec.json.Decoder(KnownEvent)
_client_frame_decoder: msgspec.json.Decoder[ClientFrame] = msgspec.json.Decoder(ClientFrame)
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_CLIENT_FRAME_TYPES = frozenset(("chat_typing", "chat_written", "chat_reaction"))


def _as_bytes(frame: bytes | bytearray | memoryview | str) -> bytes | str:
    if isinstance(frame, (bytearray, memoryview)):
        return bytes(frame)
    return frame


# What the JSON layer raises for input that is not a JSON text at all: bad
# syntax, broken UTF-8 (or a str with lone surrogates), nesting past the limit.
_NOT_JSON = (msgspec.DecodeError, UnicodeError, RecursionError)


def _not_json(exc: BaseException) -> FrameError:
    if isinstance(exc, RecursionError):
        return FrameError("JSON nested too deeply")
    if isinstance(exc, UnicodeError):
        return FrameError("not valid UTF-8 text")
    return FrameError(f"not valid JSON: {exc}")


def _classify_failure(
    frame: bytes | str, error: msgspec.ValidationError, known: frozenset[str]
) -> dict[str, Any]:
    """Return the frame as a dict when its type is unknown; else raise FrameError."""
    try:
        obj = _any_decoder.decode(frame)
    except _NOT_JSON as exc:
        raise _not_json(exc) from None
    if not isinstance(obj, dict):
        raise FrameError(f"not a JSON object: {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise FrameError("no textual 'type' field")
    if kind in known:
        raise FrameError(f"malformed {kind!r} frame: {error}") from None
    return obj


#: The hot path of a stream: one known event from ``bytes``/``str``, nothing
#: else. Raises msgspec's errors for anything it does not know (an unknown
#: type or a malformed frame): hand those to :func:`decode_event`, which tells
#: them apart. The same decoder as :func:`decode_event`'s, not a second one.
decode_known_event: Callable[[bytes | str], KnownEvent] = _event_decoder.decode


def decode_event(frame: bytes | bytearray | memoryview | str) -> Event:
    """Decode one server-to-client frame into a typed event.

    Unknown types give :class:`UnknownEvent`; anything malformed raises
    :class:`FrameError` (and nothing else).
    """
    data = _as_bytes(frame)
    try:
        return _event_decoder.decode(data)
    except msgspec.ValidationError as exc:
        obj = _classify_failure(data, exc, EVENT_TYPES)
        return UnknownEvent(obj["type"], obj)
    except _NOT_JSON as exc:
        raise _not_json(exc) from None


def encode_event(event: Event) -> bytes:
    """Encode an event back to its JSON frame (camelCase, ``type`` included)."""
    if isinstance(event, UnknownEvent):
        return _encoder.encode(event.data)
    return _encoder.encode(event)


def decode_client_frame(frame: bytes | bytearray | memoryview | str) -> ClientFrame | None:
    """Decode one client-to-server frame.

    Returns None for a frame of a type the server does not handle (the
    contract says those are ignored); raises :class:`FrameError` for
    anything malformed.
    """
    data = _as_bytes(frame)
    try:
        return _client_frame_decoder.decode(data)
    except msgspec.ValidationError as exc:
        _classify_failure(data, exc, _CLIENT_FRAME_TYPES)
        return None
    except _NOT_JSON as exc:
        raise _not_json(exc) from None


def encode_client_frame(frame: ClientFrame) -> bytes:
    return _encoder.encode(frame)


def decode(body: bytes | bytearray | memoryview | str, model: type[T]) -> T:
    """Decode a REST body into ``model`` (a struct, or e.g. ``list[Chat]``)."""
    try:
        return msgspec.json.decode(_as_bytes(body), type=model)
    except msgspec.ValidationError as exc:
        raise FrameError(f"unexpected body for {_model_name(model)}: {exc}") from None
    except _NOT_JSON as exc:
        raise _not_json(exc) from None


def encode(value: Any) -> bytes:
    """Encode a model (or a list/dict of them) to JSON bytes."""
    return _encoder.encode(value)


def to_builtins(value: Any) -> Any:
    """A model as plain dicts/lists, camelCase keys (for JSON output)."""
    return msgspec.to_builtins(value)


def _model_name(model: Any) -> str:
    return getattr(model, "__name__", None) or str(model)
