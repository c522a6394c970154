"""Looking up the channel and user names that human output shows.

The client caches names, so a long tail asks the server once per new id.
A name that cannot be looked up (a deleted channel, a server error) is shown
as its id rather than failing the command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from concordctl.errors import ConcordError
from concordctl.protocol import (
    Chat,
    ChatSent,
    ChatTyping,
    Event,
    UserJoined,
    UserLeft,
    UserStatusUpdated,
)

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.cli.render import Names
    from concordctl.client import Client

__all__ = ["add_names", "ids_of_event", "names_for_chats"]


async def add_names(
    client: Client, names: Names, channel_ids: Iterable[int], user_ids: Iterable[int]
) -> Names:
    """Look up the ids ``names`` does not know yet, concurrently."""
    want_channels = [i for i in set(channel_ids) if i not in names.channels]
    want_users = [i for i in set(user_ids) if i not in names.users]

    async def channel(i: int) -> None:
        try:
            names.channels[i] = await client.channel_name(i)
        except ConcordError:
            names.channels[i] = str(i)

    async def user(i: int) -> None:
        try:
            names.users[i] = await client.user_name(i)
        except ConcordError:
            names.users[i] = str(i)

    await asyncio.gather(*(channel(i) for i in want_channels), *(user(i) for i in want_users))
    return names


async def names_for_chats(
    client: Client, chats: Iterable[Chat], names: Names | None = None
) -> Names:
    from concordctl.cli.render import Names

    chats = list(chats)
    return await add_names(
        client,
        names if names is not None else Names(),
        (c.channel_id for c in chats),
        (c.author_id for c in chats),
    )


def ids_of_event(event: Event) -> tuple[list[int], list[int]]:
    """The (channel ids, user ids) that the human line of ``event`` names."""
    if isinstance(event, ChatSent):
        return [event.chat.channel_id], [event.chat.author_id]
    users: list[int] = []
    if isinstance(event, (ChatTyping, UserJoined, UserLeft, UserStatusUpdated)):
        users.append(event.user_id)
    channel = getattr(event, "channel_id", None)
    return ([channel] if isinstance(channel, int) else []), users
