"""protocol's accessors: the one answer to "which channel, author, thread, content"."""

from __future__ import annotations

from concordctl.protocol import (
    AUTHOR_TYPES,
    CHANNEL_TYPES,
    CONTENT_TYPES,
    EVENT_TYPES,
    THREAD_TYPES,
    Channel,
    ChannelCreated,
    ChannelDeleted,
    ChannelsUpdated,
    Chat,
    ChatEdited,
    ChatSent,
    ChatTyping,
    Event,
    UnknownEvent,
    UserJoined,
    event_author_id,
    event_channel_id,
    event_content,
    event_thread_id,
)

CHAT = Chat(
    id=10, created_at=1, author_id=20, channel_id=30, thread_id=40, content="hi", edited=False,
    reactions={},
)  # fmt: skip
CHANNEL = Channel(
    id=31,
    parent_channel_id=None,
    ordinality=0,
    name="ops",
    description="",
    capabilities=None,
    created_at=1,
    created_by_user_id=21,
)


def answers(ev: Event) -> tuple[int | None, int | None, int | None, str | None]:
    return event_channel_id(ev), event_author_id(ev), event_thread_id(ev), event_content(ev)


def test_each_event_kind_answers_from_where_it_keeps_the_value() -> None:
    assert answers(ChatSent(chat=CHAT)) == (30, 20, 40, "hi")
    edited = ChatEdited(chat_id=10, channel_id=30, thread_id=None, content="new")
    assert answers(edited) == (30, None, None, "new")
    assert answers(ChatTyping(user_id=22, channel_id=32, thread_id=41, sent_at=1)) == (
        32,
        22,
        41,
        None,
    )
    assert answers(ChannelCreated(channel=CHANNEL)) == (31, None, None, None)
    assert answers(ChannelsUpdated(channel=CHANNEL)) == (31, None, None, None)
    assert answers(ChannelDeleted(channel_id=33)) == (33, None, None, None)
    assert answers(UserJoined(user_id=23)) == (None, 23, None, None)


def test_an_unknown_type_answers_from_its_raw_data_and_only_with_ints() -> None:
    ev = UnknownEvent("poll_opened", {"type": "poll_opened", "channelId": 34, "userId": 24})
    assert answers(ev) == (34, 24, None, None)
    odd = UnknownEvent("x", {"type": "x", "channelId": "34", "userId": True})
    assert answers(odd) == (None, None, None, None)


def test_the_type_sets_name_known_types_and_agree_with_the_accessors() -> None:
    for names in (CHANNEL_TYPES, AUTHOR_TYPES, THREAD_TYPES, CONTENT_TYPES):
        assert names <= EVENT_TYPES
    assert CONTENT_TYPES <= THREAD_TYPES <= CHANNEL_TYPES
