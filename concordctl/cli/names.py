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
    from concordctl.protocol import FullChannel
    from concordctl.rest import RestClient

__all__ = ["add_names", "channel_id", "ids_of_event", "names_for_chats"]


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


async def channel_id(rest: RestClient, ref: str) -> int:
    """The id of channel ``ref`` (an id, ``name`` or ``#name``) over bare REST.

    The same rules as ``Client.channel``: exact name first, then a unique
    case-insensitive match; an unknown name is ``NotFound`` with close names.
    """
    text = ref.strip()
    if text.isdigit():
        return int(text)
    name = text.lstrip("#")
    flat: list[tuple[str, int]] = []

    def walk(nodes: list[FullChannel]) -> None:
        for node in nodes:
            flat.append((node.name, node.id))
            walk(node.children)

    walk(await rest.channels())
    for known, cid in flat:
        if known == name:
            return cid
    folded = [cid for known, cid in flat if known.casefold() == name.casefold()]
    if len(folded) == 1:
        return folded[0]
    import difflib

    from concordctl.errors import NotFound

    close = difflib.get_close_matches(name, [k for k, _ in flat], n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "list them with 'concordctl channels'"
    raise NotFound(f"no channel named {name!r}", hint=hint, suggestions=close)
