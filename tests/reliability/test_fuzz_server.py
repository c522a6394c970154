"""Hostile input to every REST endpoint and the websocket of the embedded server.

Whatever arrives, the server answers 4xx (never 5xx, never a silent hang-up)
and goes on serving everyone else: after each example a health check must
pass, and at the end a chat must still reach another user's websocket.
Requests are written byte for byte (hostile.raw_request) so that nothing
between the test and the server cleans them up.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hostile import json_bytes, login, raw_request, register
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ADMIN_PASSWORD = "fuzz-admin-password-1"


@dataclass
class Target:
    url: str
    admin_token: str = field(repr=False)
    token: str = field(repr=False)  # the fuzzer's own user
    channel_id: int
    chat_ids: list[int]
    user_id: int

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/client?token="


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    from concordctl.server import ServerConfig, ServerThread

    # Fuzzing POST /api/tokens fails many logins: raise the per-address limit
    # so the rate limiter (tested on its own) does not hide other answers.
    config = ServerConfig(
        admin_password=ADMIN_PASSWORD,
        login_failures_per_address=1_000_000,
        login_failures_per_user=1_000_000,
        # The fuzzer is an ordinary user: let it reach the channel endpoints' input
        # handling (roles are tested in tests/server).
        open_channels=True,
        # Each socket test proves its socket alive by its own typing echo: without
        # this the echo of one test waited out the 0.5 s interval of the test before
        # (typing coalescing is tested in tests/server/test_hardening_websocket.py).
        ws_typing_per_second=0,
    )
    with ServerThread(config) as server:
        url = server.url
        admin = login(url, "admin", ADMIN_PASSWORD)
        token = register(url, "fuzzer", "fuzzer-password-1")
        auth = {"Authorization": f"Bearer {admin}"}
        channels = httpx.get(f"{url}/api/channels", headers=auth).json()
        general = next(c["id"] for c in channels if c["name"] == "general")
        chat_ids = []
        for content in ("100% done", "a_b c", "plain words only", 'it\'s "quoted"', "x*y"):
            sent = httpx.post(
                f"{url}/api/channels/{general}/chats", json={"content": content}, headers=auth
            )
            sent.raise_for_status()
            chat_ids.append(sent.json()["id"])
        me = httpx.get(f"{url}/api/self", headers=auth).json()
        yield Target(url, admin, token, general, chat_ids, me["id"])


def _healthy(target: Target) -> None:
    """The server still answers a plain authenticated request."""
    response = raw_request(
        target.url, "GET", "/api/self", headers={"Authorization": f"Bearer {target.admin_token}"}
    )
    assert response.status == 200, f"health check failed after the example: {response}"


def _check(response: Any, what: str) -> None:
    assert response.status is not None, f"{what}: connection closed without an answer"
    assert response.status < 500, f"{what}: {response.status} {response.body[:300]!r}"


# -------------------------------------------------------------- strategies

text = st.text(max_size=30)  # surrogates included: written with surrogatepass
numbers = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30])
    | st.floats()
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=12,
)
FIELDS = [
    "username",
    "password",
    "newPassword",
    "content",
    "sentAt",
    "threadId",
    "name",
    "description",
    "parentChannelId",
    "ordinality",
    "capabilities",
    "reaction",
    "adding",
]
shaped = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5)
bodies = (
    st.builds(json_bytes, shaped | json_values)
    | st.binary(max_size=200)
    | st.just(b"")
    | st.sampled_from(
        [
            b"{",
            b"[" * 50_000,
            b'{"content": NaN}',
            b'{"content": "\\ud800"}',
            b'{"content": "x", "sentAt": Infinity}',
            b'{"content": "\xff\xfe"}',
        ]
    )
)
PATH_TRICKS = [
    "..",
    "../..",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e",
    "1%00",
    "1;x",
    " 1",
    "1 ",
    "0x10",
    "1e3",
    "-1",
    "0",
    "+1",
    "١٢٣",
    "%ff",
    "%",
    "9" * 400,
    "1/..",
    "%252e%252e%252f",
    "%c0%ae%c0%ae",
    "\\..\\..",
    "1?x=1",
    "1#x",
]


def _id_segments(real: list[int]) -> st.SearchStrategy[str]:
    return (
        st.sampled_from([str(i) for i in real] or ["1"])
        | st.integers(min_value=-(2**70), max_value=2**70).map(str)
        | st.sampled_from(PATH_TRICKS)
        | text.map(lambda t: quote(t, safe="", errors="surrogatepass"))
    )


ENDPOINTS = [
    ("POST", "/api/tokens"),
    ("GET", "/api/tokens/recycle"),
    ("POST", "/api/users/register"),
    ("GET", "/api/users"),
    ("GET", "/api/users/{id}"),
    ("GET", "/api/self"),
    ("POST", "/api/self/avatar"),
    ("GET", "/api/server"),
    ("GET", "/api/images/{id}"),
    ("GET", "/api/channels"),
    ("GET", "/api/channels/{id}"),
    ("POST", "/api/channels"),
    ("DELETE", "/api/channels/{id}"),
    ("GET", "/api/channels/{id}/chats/latest"),
    ("POST", "/api/channels/{id}/chats"),
    ("GET", "/api/chats"),
    ("GET", "/api/chats/{id}"),
    ("PATCH", "/api/chats/{id}"),
    ("DELETE", "/api/chats/{id}"),
    ("GET", "/api/chats/{id}/reactions"),
    ("POST", "/api/chats/{id}/reactions"),
    ("PUT", "/api/chats"),
    ("GET", "/api/nope/{id}"),
]
QUERY_NAMES = ["page", "size", "authorId", "channelId", "threadId", "before", "after", "query"]
CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "image/png",
    "image/gif",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
    "",
]


@st.composite
def requests(draw: st.DrawFn, target: Target) -> tuple[str, str, dict[str, str], bytes]:
    method, template = draw(st.sampled_from(ENDPOINTS))
    # Never DELETE what the other examples use; a random id is fair game.
    real = [] if method == "DELETE" else [target.channel_id, target.user_id, *target.chat_ids]
    path = template.replace("{id}", draw(_id_segments(real)))
    query = draw(st.dictionaries(st.sampled_from(QUERY_NAMES), numbers.map(str) | text, max_size=4))
    if query:
        path += "?" + "&".join(
            f"{k}={quote(v, safe='', errors='surrogatepass')}" for k, v in query.items()
        )
    auth = draw(
        st.sampled_from(
            [
                f"Bearer {target.token}",
                f"Bearer {target.token}x",
                "Bearer",
                "Bearer  ",
                "Basic YWRtaW46YWRtaW4=",
                f"bearer {target.token}",
                "Bearer a.b.c",
                "Bearer " + "A" * 5000,
                "",
            ]
        )
    )
    headers = {"Authorization": auth} if auth else {}
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type:
        headers["Content-Type"] = content_type
    body = draw(bodies) if method in ("POST", "PATCH", "PUT") else b""
    return method, path, headers, body


def test_every_endpoint_answers_hostile_requests_with_4xx(target: Target) -> None:
    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        method, path, headers, body = data.draw(requests(target))
        response = raw_request(target.url, method, path, headers=headers, body=body)
        _check(response, f"{method} {path!r} body={body[:80]!r}")
        _healthy(target)

    run()


# ----------------------------------------------------------- named cases


def _auth(target: Target) -> dict[str, str]:
    return {"Authorization": f"Bearer {target.token}", "Content-Type": "application/json"}


TEN_MB = 10 * 1024 * 1024


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/channels/{c}/chats"),
        ("POST", "/api/tokens"),
        ("POST", "/api/channels"),
        ("POST", "/api/users/register"),
        ("POST", "/api/self/avatar"),
    ],
)
def test_ten_megabyte_bodies_get_413(target: Target, method: str, path: str) -> None:
    path = path.replace("{c}", str(target.channel_id))
    body = json_bytes({"content": "x" * TEN_MB, "username": "u", "password": "p", "name": "n"})
    headers = _auth(target) | ({"Content-Type": "image/png"} if "avatar" in path else {})
    response = raw_request(target.url, method, path, headers=headers, body=body)
    assert response.status == 413, response
    # A Content-Length that claims 10 MB is refused before the body is read.
    claimed = raw_request(
        target.url, method, path, headers=headers, body=b"{}", content_length=TEN_MB
    )
    assert claimed.status in (413, None), claimed
    _healthy(target)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"content": ' + b"[" * 100_000,
        b'{"content": "x", "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"content": NaN}',
        b'{"content": "x", "sentAt": NaN}',
        b'{"content": "x", "sentAt": Infinity}',
        b'{"content": "x", "sentAt": -Infinity}',
        b'{"content": "x", "sentAt": 1e999}',
        b'{"content": "x", "sentAt": 18446744073709551616}',
        b'{"content": "x", "sentAt": -1}',
        b'{"content": "x", "sentAt": 1.5}',
        b'{"content": "x", "threadId": 18446744073709551616}',
        b'{"content": "x", "threadId": 99999999999999999999999999999999999999}',
        b'{"content": "x", "threadId": -5}',
        b'{"content": "x", "threadId": "1"}',
        b'{"content": "\\ud800"}',
        b'{"content": "\\udfff\\ud800"}',
        b'{"content": "\xed\xa0\x80"}',
        b'{"content": "\xff"}',
        b'{"content": "\\u0000"}',
        b'{"content": ""}',
        b'{"content": "   "}',
        b'{"content": "' + b"x" * 60_000 + b'"}',
        b'{"content": 5}',
        b'{"content": null}',
        b"null",
        b"[]",
        b'"content"',
        b"{}",
    ],
    ids=lambda b: b[:40].decode("latin-1") if isinstance(b, bytes) else None,
)
def test_hostile_chat_bodies_get_4xx(target: Target, body: bytes) -> None:
    path = f"/api/channels/{target.channel_id}/chats"
    response = raw_request(target.url, "POST", path, headers=_auth(target), body=body)
    assert response.status is not None and 400 <= response.status < 500, (response, body[:80])
    _healthy(target)


@pytest.mark.parametrize(
    "path",
    [
        "/api/chats/18446744073709551616",
        "/api/chats/9223372036854775808",
        "/api/chats/99999999999999999999999999999999999999999",
        "/api/chats/-1",
        "/api/chats/0",
        "/api/users/18446744073709551615",
        "/api/channels/18446744073709551616/chats/latest",
        "/api/chats?channelId=18446744073709551616",
        "/api/chats?authorId=-18446744073709551616",
        "/api/chats?threadId=18446744073709551616",
        "/api/chats?before=99999999999999999999999",
        "/api/chats?size=99999999999999999999",
        "/api/chats?page=-1",
        "/api/chats?page=99999999999999",
        "/api/chats?size=0",
        "/api/channels/1/chats/latest?size=-1",
        "/api/channels/1/chats/latest?size=1e3",
    ],
)
def test_ids_and_numbers_beyond_64_bits_in_paths_and_queries(target: Target, path: str) -> None:
    response = raw_request(target.url, "GET", path, headers=_auth(target))
    _check(response, path)
    if "page=99999999999999" not in path:
        assert response.status != 200 or response.body.startswith(b"["), response
    _healthy(target)


IMAGE_TRICKS = [
    "../../../../etc/passwd",
    "..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "....//....//etc/passwd",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "1%2f..%2f..%2fserver.db",
    "..\\..\\etc\\passwd",
    "1%00.png",
    "1;/etc/passwd",
    "~root",
    "*",
    "%",
    "1 OR 1=1",
    "0",
    "-1",
    "18446744073709551616",
    "1" * 1000,
]


@pytest.mark.parametrize("trick", IMAGE_TRICKS)
def test_path_tricks_in_images(target: Target, trick: str) -> None:
    response = raw_request(target.url, "GET", f"/api/images/{trick}", headers=_auth(target))
    assert response.status is not None and 400 <= response.status < 500, response
    assert b"root:" not in response.body
    _healthy(target)


SEARCHES = [
    "%",
    "_",
    "%%",
    "*",
    "\\",
    "\\%",
    "' OR '1'='1",
    "'; DROP TABLE chats; --",
    '"',
    '""',
    '"unterminated',
    "a OR b",
    "NEAR(a b)",
    "content:x",
    "^x",
    "x*",
    "-x",
    "(",
    ")",
    "AND",
    "NOT",
    "{x}",
    "[x]",
    "\x00",
    "é%",
    "% OR 1=1",
]


@pytest.mark.parametrize("query", SEARCHES)
def test_sql_metacharacters_and_wildcards_in_search(target: Target, query: str) -> None:
    response = httpx.get(
        f"{target.url}/api/chats",
        params={"query": query, "channelId": target.channel_id},
        headers=_auth(target),
    )
    assert 200 <= response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code == 200:
        contents = {c["content"] for c in response.json()}
        # A wildcard is a literal character, never "match everything".
        assert "plain words only" not in contents, (query, contents)
    assert len(httpx.get(f"{target.url}/api/chats", headers=_auth(target)).json()) >= 5
    _healthy(target)


def test_wildcards_are_literal_words_in_search(target: Target) -> None:
    def search(query: str) -> set[str]:
        response = httpx.get(
            f"{target.url}/api/chats", params={"query": query}, headers=_auth(target)
        )
        assert response.status_code == 200
        return {c["content"] for c in response.json()}

    assert "plain words only" in search("plain")
    assert "plain words only" in search("only plain")  # all words, in any order
    assert "plain words only" not in search("nothing words")
    assert "plain words only" not in search("nothing OR words")  # OR is a word, not syntax
    for pattern in ("pl%", "pl*", "plai_", "p%n", "pl?in", "[p]lain"):
        assert "plain words only" not in search(pattern), pattern


# ---------------------------------------------------------------- websocket


def _recv_own_typing(ws: ClientConnection, user_id: int, channel_id: int) -> None:
    """Prove the socket still works: a typing frame comes back to its sender."""
    ws.send(json.dumps({"type": "chat_typing", "channelId": channel_id, "threadId": None}))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frame = json.loads(ws.recv(timeout=deadline - time.monotonic()))
        if frame.get("type") == "chat_typing" and frame.get("userId") == user_id:
            return
    raise AssertionError("the socket stopped delivering events")


@pytest.fixture
def fuzzer_socket(target: Target) -> Iterator[tuple[ClientConnection, int]]:
    me = httpx.get(f"{target.url}/api/self", headers=_auth(target)).json()
    with connect(target.ws_url + target.token, max_size=None, open_timeout=10) as ws:
        yield ws, me["id"]


ws_frames = (
    st.builds(json.dumps, json_values)
    | st.builds(
        lambda kind, obj: json.dumps(obj | {"type": kind}, allow_nan=True),
        st.sampled_from(["chat_typing", "chat_written", "chat_reaction", "heartbeat"]) | text,
        st.dictionaries(
            st.sampled_from(
                ["channelId", "threadId", "sentAt", "content", "chatId", "reaction", "adding"]
            ),
            json_values,
            max_size=5,
        ),
    )
    | text
)


def test_websocket_survives_hostile_frames(
    target: Target, fuzzer_socket: tuple[ClientConnection, int]
) -> None:
    ws, user_id = fuzzer_socket
    sent: list[str] = []

    @FUZZ
    @given(ws_frames)
    def run(frame: str) -> None:
        sent.append(frame)
        try:
            ws.send(frame.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
        except ConnectionClosed as exc:
            raise AssertionError(f"socket closed ({exc}) after frames {sent[-3:]!r}") from None

    run()
    try:
        _recv_own_typing(ws, user_id, target.channel_id)
    except ConnectionClosed as exc:
        raise AssertionError(f"socket closed ({exc}); last frames {sent[-5:]!r}") from None
    _healthy(target)


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "chat_written", "channelId": 18446744073709551616, "content": "x"}',
        '{"type": "chat_written", "channelId": -1, "content": "x"}',
        '{"type": "chat_written", "channelId": 1, "content": "x", "threadId": {big}}',
        '{"type": "chat_written", "channelId": {c}, "content": "x", "sentAt": {big}}',
        '{"type": "chat_written", "channelId": {c}, "content": "x", "sentAt": NaN}',
        '{"type": "chat_written", "channelId": {c}, "content": "\\ud800"}',
        '{"type": "chat_written", "channelId": {c}, "content": ""}',
        '{"type": "chat_written", "channelId": {c}, "content": "\\u0000"}',
        '{"type": "chat_reaction", "chatId": 18446744073709551616, "reaction": "x"}',
        '{"type": "chat_reaction", "chatId": 1, "reaction": "x"}',
        '{"type": "chat_typing", "channelId": 18446744073709551616}',
        '{"type": "chat_typing", "channelId": 1, "sentAt": -99999999999999999999}',
        "[" * 60_000,
        '{"type": ' + "[" * 5000,
        "not json",
        "",
    ],
    ids=lambda f: f[:50],
)
def test_websocket_ignores_bad_frames(
    target: Target, fuzzer_socket: tuple[ClientConnection, int], frame: str
) -> None:
    ws, user_id = fuzzer_socket
    ws.send(frame.replace("{c}", str(target.channel_id)).replace("{big}", str(2**64)))
    _recv_own_typing(ws, user_id, target.channel_id)


def test_binary_frame_with_invalid_utf8_is_ignored(
    target: Target, fuzzer_socket: tuple[ClientConnection, int]
) -> None:
    ws, user_id = fuzzer_socket
    ws.send(b'{"type": "chat_written", "channelId": %d, "content": "\xff"}' % target.channel_id)
    _recv_own_typing(ws, user_id, target.channel_id)


def test_binary_and_oversized_frames_close_only_that_socket(target: Target) -> None:
    with connect(target.ws_url + target.admin_token, open_timeout=10) as observer:
        for hostile in (b"\x00\xff" * 10, "x" * TEN_MB, b"y" * TEN_MB):
            # Refused (closed with 1009) or ignored: either way the server
            # must go on serving the observer.
            with (
                connect(target.ws_url + target.token, max_size=None, open_timeout=10) as ws,
                contextlib.suppress(ConnectionClosed, TimeoutError, OSError),
            ):
                ws.send(hostile)
                ws.recv(timeout=2)
        sent = httpx.post(
            f"{target.url}/api/channels/{target.channel_id}/chats",
            json={"content": "after the hostile frames"},
            headers=_auth(target),
        )
        assert sent.status_code == 200
        deadline = time.monotonic() + 10
        while True:
            frame = json.loads(observer.recv(timeout=max(0.1, deadline - time.monotonic())))
            if frame.get("type") == "chat_sent" and frame["chat"]["id"] == sent.json()["id"]:
                break
    with connect(target.ws_url + target.token, max_size=None, open_timeout=10) as ws:
        with contextlib.suppress(ConnectionClosed, OSError):
            ws.send("x" * 100_000)  # over the 64 KiB cap, small enough to arrive whole
        with pytest.raises(ConnectionClosed):
            for _ in range(100):
                ws.recv(timeout=10)
        assert ws.close_code == 1009


@pytest.mark.parametrize(
    "query",
    ["", "?token=", "?token=garbage", "?token=a.b.c", "?x=1", "?token=%00", "?token=" + "A" * 8000],
)
def test_websocket_handshake_with_bad_tokens_gets_401(target: Target, query: str) -> None:
    response = raw_request(
        target.url,
        "GET",
        "/client" + query,
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    assert response.status in (401, 431, 414), response
    _healthy(target)


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /api/self HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        b"GET /api/self HTTP/1.1\r\nHost: x\r\n" + b"X-H: 1\r\n" * 5000 + b"\r\n",
        b"POST /api/tokens HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nxx\r\n",
        b"POST /api/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /api/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"GET /api/self HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
        b"GET /api/self\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello
    ],
    ids=lambda b: b[:24].decode("latin-1"),
)
def test_malformed_http_gets_4xx_or_a_close(target: Target, raw: bytes) -> None:
    with socket.create_connection(("127.0.0.1", int(target.url.rsplit(":", 1)[1])), 10) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                data += chunk
    if data:
        status = int(data.split(b" ", 2)[1])
        assert 400 <= status < 500, data[:200]
    _healthy(target)


def test_half_sent_requests_do_not_block_anyone(target: Target) -> None:
    # Slow or stalled clients (a slowloris) hold sockets, not the server.
    port = int(target.url.rsplit(":", 1)[1])
    stalled = []
    try:
        for i in range(60):
            sock = socket.create_connection(("127.0.0.1", port), 10)
            part = b"POST /api/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
            sock.sendall(part if i % 2 else b"GET /api/self HTTP/1.1\r\nHost: x\r\n")
            stalled.append(sock)
        start = time.monotonic()
        _healthy(target)
        with connect(target.ws_url + target.token, open_timeout=10) as ws:
            ws.send(json.dumps({"type": "chat_typing", "channelId": target.channel_id}))
        assert time.monotonic() - start < 10
    finally:
        for sock in stalled:
            sock.close()
