"""``send --key KEY``: notifications that a retried CI job never posts twice.

Concord stores nothing but the content of a chat, so the key travels in the
content: a last line ``🔑 KEY`` (the *marker*). A later ``send --key KEY`` by
the same user in the same channel searches the server for that marker (by
author, channel and the key as the query) and edits the chat it finds
instead of posting a new one. Because the marker lives on the server, this
works from a fresh machine with no local state.

Two sends with the same key racing each other can still both post: the
guarantee is for retries, which come one after the other.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from concordctl.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from concordctl.client import Client
    from concordctl.protocol import Chat

__all__ = ["MARKER", "find_keyed_chat", "has_marker", "validate_key", "with_marker"]

#: What precedes the key on the chat's last line.
MARKER = "🔑 "

# Keys are one word (so the server's full-text search can find them) of
# characters that survive any shell and URL without quoting.
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+=#-]{0,99}$")

# How many of the user's latest chats in the channel are scanned when the
# full-text search does not find the key (a server that tokenizes it oddly).
_SCAN_LIMIT = 200


def validate_key(key: str) -> str:
    if not _KEY.match(key):
        raise UsageError(
            f"--key: {key!r} is not a valid key",
            hint="1-100 letters, digits and . _ : / @ + = # -, starting with a letter or digit",
        )
    return key


def with_marker(content: str, key: str) -> str:
    """``content`` with the marker line for ``key`` appended."""
    return f"{content}\n{MARKER}{key}"


def has_marker(content: str, key: str) -> bool:
    marker = f"{MARKER}{key}"
    return content == marker or content.endswith("\n" + marker)


async def find_keyed_chat(client: Client, channel_id: int, author_id: int, key: str) -> Chat | None:
    """The newest chat by ``author_id`` in ``channel_id`` carrying ``key``'s marker."""
    for query, limit in ((key, 100), (None, _SCAN_LIMIT)):
        chats = await client.search_chats(query, channel=channel_id, author=author_id, limit=limit)
        for chat in chats:  # newest first
            if chat.author_id == author_id and has_marker(chat.content, key):
                return chat
    return None
