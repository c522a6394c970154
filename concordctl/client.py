"""``Client``: the facade people use, over the REST client and the event stream.

    async with Client("http://127.0.0.1:8080", username="bot", password="...") as c:
        general = await c.channel("#general")
        chat = await c.send_chat(general.id, "hello")
        async for event in c.events(channels=["general"]):
            ...

``Client()`` with no arguments resolves settings like the command line
(argument > ``CONCORD_*`` environment > profile; :mod:`concordctl.config`).
Channels and users may be named by id (``123`` or ``"123"``) or by name
(``"general"``, ``"#general"``); an unknown name raises ``NotFound`` whose
``suggestions`` lists close names. Names are cached for the client's life.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from concordctl import protocol as p
from concordctl.config import Settings, resolve_settings, ssl_context
from concordctl.errors import NotAuthenticated, NotFound, Unreachable, UsageError, redact_url
from concordctl.ids import now_ms
from concordctl.tokens import token_is_fresh

if TYPE_CHECKING:  # pragma: no cover
    # Both imported on first use: ``from concordctl import Client`` and a
    # REST-only command load neither websockets nor httpx.
    from concordctl.rest import RestClient
    from concordctl.stream import EventStream
    from concordctl.streamstate import StreamState

__all__ = ["Client", "NameCache", "StreamState", "flatten_channels"]

log = logging.getLogger("concordctl.client")


def __getattr__(name: str) -> Any:
    # StreamState is re-exported for ``on_state`` callbacks; a REST-only
    # command (``concordctl send``) never needs its enum and dataclass built.
    if name == "StreamState":
        from concordctl.streamstate import StreamState

        return StreamState
    raise AttributeError(f"module 'concordctl.client' has no attribute {name!r}")


ChannelRef = int | str
UserRef = int | str


def flatten_channels(tree: Iterable[p.FullChannel], parent: int | None = None) -> list[p.Channel]:
    """The channel tree of ``GET /channels`` as flat ``Channel`` objects, depth first."""
    out: list[p.Channel] = []
    for node in tree:
        out.append(
            p.Channel(
                id=node.id,
                parent_channel_id=parent,
                ordinality=node.ordinality,
                name=node.name,
                description=node.description,
                capabilities=node.capabilities,
                created_at=node.created_at,
                created_by_user_id=node.created_by_user_id,
            )
        )
        out.extend(flatten_channels(node.children, node.id))
    return out


def _as_id(ref: int | str) -> int | None:
    """``123`` or ``"123"`` -> 123; a name -> None."""
    if isinstance(ref, bool):
        raise UsageError(f"not a channel or user: {ref!r}")
    if isinstance(ref, int):
        return ref
    text = ref.strip()
    return int(text) if text.isdigit() else None


def _not_found(kind: str, name: str, known: Iterable[str]) -> NotFound:
    import difflib  # only for a name that is not there

    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"list them with 'concordctl {kind}s'"
    return NotFound(f"no {kind} named {name!r}", hint=hint, suggestions=close)


class NameCache:
    """Names by id and ids by name, of one kind (channels or users), for a client's life.

    ``first_wins``: when two ids share a name (channels in different parents),
    the name keeps resolving to the first one seen.
    """

    __slots__ = ("first_wins", "ids", "names")

    def __init__(self, *, first_wins: bool = False) -> None:
        self.names: dict[int, str] = {}
        self.ids: dict[str, int] = {}
        self.first_wins = first_wins

    def remember(self, ident: int, name: str) -> None:
        self.names[ident] = name
        if self.first_wins:
            self.ids.setdefault(name, ident)
        else:
            self.ids[name] = ident

    def forget(self, ident: int) -> None:
        name = self.names.pop(ident, None)
        if name is not None and self.ids.get(name) == ident:
            del self.ids[name]

    def rename(self, ident: int, name: str) -> None:
        self.forget(ident)
        self.remember(ident, name)


class Client:
    """Async client for one Concord server; see the module docstring.

    Use as ``async with Client(...) as c``; leaving the block closes the
    connection pool and every event stream it opened.

    The REST client (``c.rest``) is made by the first call that needs it: a
    stream that already has a fresh token (``tail`` with ``CONCORD_TOKEN``)
    never imports httpx, which is most of a command's start-up.

    ``threaded_http=True`` sends each REST request on httpx's blocking
    transport in a thread of its own instead of httpx's asyncio pool; it
    starts about 30 ms quicker (it needs no anyio), which a one-shot command
    line notices and a long-lived client does not.
    """

    def __init__(
        self,
        server: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        profile: str | None = None,
        config_path: Path | str | None = None,
        ca_cert: str | None = None,
        insecure: bool = False,
        timeout: float | None = None,
        settings: Settings | None = None,
        max_retries: int = 3,
        stream_options: dict[str, Any] | None = None,
        threaded_http: bool = False,
    ) -> None:
        if settings is None:
            settings = resolve_settings(
                server,
                username=username,
                password=password,
                token=token,
                profile=profile,
                config_path=config_path,
                ca_cert=ca_cert,
                insecure=insecure or None,
                timeout=timeout,
            )
        self.settings = settings
        self._ssl = ssl_context(settings)  # also checks the server URL, now
        self._max_retries = max_retries
        self._threaded_http = threaded_http
        self._rest: RestClient | None = None
        self._closed = False
        self.stream_options: dict[str, Any] = dict(stream_options or {})
        self._streams: list[EventStream] = []
        self._channels = NameCache(first_wins=True)
        self._users = NameCache()

    def __repr__(self) -> str:
        return (
            f"Client(server={redact_url(self.settings.server)!r}, "
            f"username={self.settings.username!r}, token={'***' if self.token else None})"
        )

    @property
    def rest(self) -> RestClient:
        """The REST client (one connection pool), made on first use."""
        if self._rest is None:
            if self._closed:
                raise RuntimeError("the client is closed")
            from concordctl.rest import RestClient

            settings = self.settings
            self._rest = RestClient(
                settings.base_url,
                username=settings.username,
                password=settings.password,
                token=settings.token,
                timeout=settings.timeout,
                # Plain http: nothing to verify, and loading the CA bundle costs ~90 ms.
                # Redirects are not followed, so no request can reach https unverified.
                verify=self._ssl if self._ssl is not None else False,
                max_retries=self._max_retries,
                threaded=self._threaded_http,
            )
        return self._rest

    @rest.setter
    def rest(self, rest: RestClient) -> None:
        self._rest = rest

    @property
    def _has_credentials(self) -> bool:
        """Whether a username and password are there to log in (again) with."""
        if self._rest is not None:
            return self._rest.has_credentials
        return bool(self.settings.username and self.settings.password)

    async def __aenter__(self) -> Client:
        # Log in now, so that c.token is set and a first stream connects at
        # once. Bad credentials are not fatal here: register() needs none, and
        # the first call that needs a token raises NotAuthenticated anyway.
        if self._has_credentials and self.token is None:
            try:
                await self.login()
            except NotAuthenticated as exc:
                log.debug("login on entering the client failed: %s", exc)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        streams, self._streams = self._streams, []
        for stream in streams:
            await stream.aclose()
        self._closed = True
        if self._rest is not None:
            await self._rest.aclose()

    @property
    def token(self) -> str | None:
        return self._rest.token if self._rest is not None else self.settings.token

    async def _stream_token(self) -> str:
        """The token for a websocket handshake.

        A token given in the settings that is not due for renewal is used as
        it is, without making the REST client; anything else (none yet, due
        for renewal, already renewed) is the REST client's business.
        """
        if self._rest is None:
            token = self.settings.token
            if token is not None and token_is_fresh(token):
                return token
        return await self.rest.ensure_token()

    async def _renew_token(self, stale: str) -> str:
        return await self.rest.renew_token(stale)

    # ------------------------------------------------------------------
    # Accounts
    # ------------------------------------------------------------------

    async def login(self) -> str:
        """Log in with the username and password; returns (and keeps) the token."""
        return await self.rest.login()

    async def register(self, username: str, password: str) -> p.RegisteredUser:
        return await self.rest.register(username, password)

    async def me(self) -> p.FullUser:
        user = await self.rest.me()
        self._remember_user(user)
        return user

    async def change_password(self, new_password: str) -> None:
        await self.rest.change_password(new_password)

    async def server_info(self) -> p.Server:
        return await self.rest.server()

    async def edit_server(
        self, *, name: str | None = None, description: str | None = None
    ) -> p.Server:
        """Change the server's name or description (an admin's; Forbidden otherwise)."""
        return await self.rest.edit_server(name=name, description=description)

    async def promote_user(self, user: UserRef) -> p.PromotedUser:
        """Make a user an admin (an admin's). ``user`` is a name or an id."""
        uid = _as_id(user)
        name = (await self.user(uid)).username if uid is not None else str(user).lstrip("@")
        return await self.rest.promote_user(name)

    async def revoke_tokens(self) -> bool:
        """Invalidate every token of this user (``logout``); False if the server cannot.

        A server without the endpoint (upstream Concord) answers 404 or 405:
        then nothing was revoked and the tokens stay valid until they expire.
        """
        return await self.rest.revoke_tokens()

    # ------------------------------------------------------------------
    # Channels
    # ------------------------------------------------------------------

    def _remember_channel(self, channel: p.Channel | p.FullChannel) -> None:
        self._channels.remember(channel.id, channel.name)

    async def channels(self) -> list[p.FullChannel]:
        """``GET /channels``: the channel tree."""
        tree = await self.rest.channels()
        self._channels.ids.clear()
        for channel in flatten_channels(tree):
            self._remember_channel(channel)
        return tree

    async def all_channels(self) -> list[p.Channel]:
        """Every channel, flattened (children after their parent)."""
        return flatten_channels(await self.channels())

    async def channel_id(self, ref: ChannelRef) -> int:
        """The id for ``ref`` (an id is returned as is, without a request)."""
        cid = _as_id(ref)
        if cid is not None:
            return cid
        name = str(ref).strip().lstrip("#")
        if name in self._channels.ids:
            return self._channels.ids[name]
        return (await self.channel(name)).id

    async def channel(self, ref: ChannelRef) -> p.Channel:
        """A channel by id (``123``, ``"123"``) or name (``"general"``, ``"#general"``)."""
        cid = _as_id(ref)
        if cid is not None:
            channel = await self.rest.channel(cid)
            self._remember_channel(channel)
            return channel
        name = str(ref).strip().lstrip("#")
        flat = await self.all_channels()
        for channel in flat:
            if channel.name == name:
                return channel
        folded = [c for c in flat if c.name.casefold() == name.casefold()]
        if len(folded) == 1:
            return folded[0]
        raise _not_found("channel", name, (c.name for c in flat))

    async def channel_name(self, channel_id: int) -> str:
        """The channel's name (cached); ``str(channel_id)`` if it no longer exists."""
        name = self._channels.names.get(channel_id)
        if name is None:
            try:
                name = (await self.channel(channel_id)).name
            except NotFound:
                name = str(channel_id)
                self._channels.names[channel_id] = name
        return name

    async def create_channel(
        self,
        name: str,
        description: str | None = None,
        parent_channel_id: int | None = None,
        *,
        ordinality: int | None = None,
        capabilities: list[str] | None = None,
    ) -> p.Channel:
        channel = await self.rest.create_channel(
            name.lstrip("#"), description, parent_channel_id, ordinality, capabilities
        )
        self._remember_channel(channel)
        return channel

    async def edit_channel(
        self, channel: ChannelRef, *, name: str | None = None, description: str | None = None
    ) -> p.Channel:
        """Rename a channel or change its description (an admin's, unless the server is open)."""
        cid = await self.channel_id(channel)
        updated = await self.rest.edit_channel(
            cid, name=name.lstrip("#") if name is not None else None, description=description
        )
        self._channels.rename(cid, updated.name)
        return updated

    async def delete_channel(self, channel: ChannelRef) -> None:
        cid = await self.channel_id(channel)
        await self.rest.delete_channel(cid)
        self._channels.forget(cid)

    # ------------------------------------------------------------------
    # Users
    # ------------------------------------------------------------------

    def _remember_user(self, user: p.FullUser) -> None:
        self._users.remember(user.id, user.username)

    async def users(self) -> list[p.FullUser]:
        users = await self.rest.users()
        for user in users:
            self._remember_user(user)
        return users

    async def user(self, ref: UserRef) -> p.FullUser:
        """A user by id or username (``"@name"`` works too)."""
        uid = _as_id(ref)
        if uid is not None:
            user = await self.rest.user(uid)
            self._remember_user(user)
            return user
        name = str(ref).strip().lstrip("@")
        users = await self.users()
        for user in users:
            if user.username == name:
                return user
        raise _not_found("user", name, (u.username for u in users))

    async def user_id(self, ref: UserRef) -> int:
        uid = _as_id(ref)
        if uid is not None:
            return uid
        name = str(ref).strip().lstrip("@")
        if name in self._users.ids:
            return self._users.ids[name]
        return (await self.user(name)).id

    async def user_name(self, user_id: int) -> str:
        """The user's username (cached); ``str(user_id)`` if unknown."""
        name = self._users.names.get(user_id)
        if name is None:
            try:
                name = (await self.user(user_id)).username
            except NotFound:
                name = str(user_id)
                self._users.names[user_id] = name
        return name

    # ------------------------------------------------------------------
    # Chats
    # ------------------------------------------------------------------

    async def send_chat(
        self,
        channel: ChannelRef,
        content: str,
        *,
        thread_id: int | None = None,
        sent_at: int | None = None,
    ) -> p.Chat:
        """Send a chat over REST (never repeated blindly) and return it."""
        cid = await self.channel_id(channel)
        return await self.rest.send_chat(cid, content, thread_id=thread_id, sent_at=sent_at)

    async def get_chat(self, chat_id: int) -> p.Chat:
        return await self.rest.chat(chat_id)

    async def edit_chat(self, chat_id: int, content: str) -> p.Chat:
        return await self.rest.edit_chat(chat_id, content)

    async def delete_chat(self, chat_id: int) -> None:
        await self.rest.delete_chat(chat_id)

    async def react(self, chat_id: int, reaction: str) -> None:
        await self.rest.react(chat_id, reaction, True)

    async def unreact(self, chat_id: int, reaction: str) -> None:
        await self.rest.react(chat_id, reaction, False)

    async def reactions(self, chat_id: int) -> p.Reactions:
        return await self.rest.reactions(chat_id)

    async def latest_chats(self, channel: ChannelRef, limit: int = 50) -> list[p.Chat]:
        """The newest ``limit`` chats of a channel, newest first."""
        cid = await self.channel_id(channel)
        return await self.rest.latest_chats(cid, size=limit)

    async def search_chats(
        self,
        query: str | None = None,
        *,
        channel: ChannelRef | None = None,
        author: UserRef | None = None,
        thread_id: int | None = None,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
        page_size: int = 50,
    ) -> list[p.Chat]:
        """``GET /chats`` paged until ``limit`` chats or the end; newest first."""
        cid = await self.channel_id(channel) if channel is not None else None
        uid = await self.user_id(author) if author is not None else None
        out: list[p.Chat] = []
        seen: set[int] = set()
        page = 0
        while len(out) < limit:
            chats = await self.rest.search_chats(
                page=page,
                size=page_size,
                author_id=uid,
                channel_id=cid,
                thread_id=thread_id,
                before=before,
                after=after,
                query=query,
            )
            fresh = [c for c in chats if c.id not in seen]
            if not fresh:
                break
            for chat in fresh:
                seen.add(chat.id)
            out.extend(fresh)
            page += 1
        return out[:limit]

    # ------------------------------------------------------------------
    # The event stream
    # ------------------------------------------------------------------

    def events(
        self,
        since: int | None = None,
        since_time: int | None = None,
        channels: Sequence[ChannelRef] | None = None,
        on_state: Callable[[StreamState], object] | None = None,
        **options: Any,
    ) -> EventStream:
        """The live events, reconnecting forever; iterate with ``async for``.

        ``since`` (a chat id) or ``since_time`` (epoch ms) first recovers the
        chats after that cursor (with a Gap marker). ``channels`` keeps only the
        events of those channels (plus the events not tied to a channel).
        ``options`` (``ping_interval``, ``recovery_margin``, ``max_queue``, ...),
        over the client's ``stream_options``, become the stream's
        :class:`~concordctl.stream.StreamOptions`; an unknown name is a TypeError.
        """
        resolve = None
        if channels is not None:
            refs = list(channels)

            async def resolve() -> Sequence[int] | None:
                return [await self.channel_id(ref) for ref in refs]

        from concordctl.stream import EventStream, StreamHooks, StreamOptions

        hooks = StreamHooks(
            renew_token=self._renew_token,
            can_renew=lambda: self._has_credentials,
            fetch_chats=self._recovery_page,
            get_chat=self.get_chat,
            resolve_channels=resolve,
            on_dead_connection=self._reset_rest,
            on_state=on_state,
        )
        stream = EventStream(
            self.settings.ws_url,
            get_token=self._stream_token,
            hooks=hooks,
            options=StreamOptions.of(self.stream_options, **options),
            since=since,
            since_time=since_time,
            ssl=self._ssl,
        )
        self._streams = [s for s in self._streams if s.state.state != "closed"]
        self._streams.append(stream)
        return stream

    async def _recovery_page(
        self, *, channel_id: int | None, after: int, page: int, size: int
    ) -> list[p.Chat]:
        return await self.rest.search_chats(
            channel_id=channel_id, after=after, page=page, size=size
        )

    async def _reset_rest(self) -> None:
        if self._rest is not None:  # no pool yet: nothing to reset
            self._rest.reset_connections()

    # Client frames: over the newest open stream, else over a short connection.

    async def _send_frame(self, frame: p.ClientFrame) -> None:
        for stream in reversed(self._streams):
            if stream.connected:
                try:
                    await stream.send_frame(frame)
                    return
                except Unreachable:
                    continue
        from concordctl.stream import EventStream, StreamHooks

        stream = EventStream(
            self.settings.ws_url,
            get_token=self._stream_token,
            hooks=StreamHooks(
                renew_token=self._renew_token, can_renew=lambda: self._has_credentials
            ),
            ssl=self._ssl,
        )
        ws = await stream.connect_once()
        try:
            await ws.send(p.encode_client_frame(frame).decode())
        finally:
            await ws.close()

    async def typing(self, channel: ChannelRef, thread_id: int | None = None) -> None:
        """Say "typing" in a channel (a websocket frame; no REST equivalent)."""
        cid = await self.channel_id(channel)
        await self._send_frame(
            p.ChatTypingFrame(channel_id=cid, thread_id=thread_id, sent_at=now_ms())
        )

    async def write(self, channel: ChannelRef, content: str, thread_id: int | None = None) -> None:
        """Send a chat over the socket (no confirmation; ``send_chat`` gives one)."""
        cid = await self.channel_id(channel)
        # sentAt is sent explicitly: upstream stores a chat_written without it at createdAt 0.
        await self._send_frame(
            p.ChatWritten(channel_id=cid, content=content, thread_id=thread_id, sent_at=now_ms())
        )

    async def react_frame(self, chat_id: int, reaction: str, adding: bool = True) -> None:
        """Add or remove a reaction over the socket (``react`` confirms over REST)."""
        await self._send_frame(p.ChatReaction(chat_id=chat_id, reaction=reaction, adding=adding))
