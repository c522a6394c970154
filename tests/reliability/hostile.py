"""Helpers for talking to a server the way a hostile or broken peer does.

``raw_request`` writes an HTTP/1.1 request byte for byte over a plain socket:
no client library in between to normalise ``..`` segments, percent-encode,
refuse odd headers or fix a Content-Length. It returns the status code, or
None when the server closed the connection without answering.
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx


@dataclass
class RawResponse:
    status: int | None
    headers: dict[str, str]
    body: bytes


def raw_request(
    url: str,
    method: str,
    target: str | bytes,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    content_length: int | None = None,
    timeout: float = 20.0,
) -> RawResponse:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target_bytes = target if isinstance(target, bytes) else target.encode("utf-8", "surrogatepass")
    lines = [method.encode() + b" " + target_bytes + b" HTTP/1.1", f"Host: {host}:{port}".encode()]
    head = {"Connection": "close"} | (headers or {})
    if body or content_length is not None:
        head["Content-Length"] = str(len(body) if content_length is None else content_length)
    for name, value in head.items():
        lines.append(name.encode() + b": " + value.encode("utf-8", "surrogatepass"))
    request = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        # The server may answer (413) and close before it has read the whole
        # body: a failed write is fine as long as an answer comes back.
        with contextlib.suppress(OSError):
            sock.sendall(request)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                data += chunk
                if _complete(data):
                    break
    return _parse(data)


def _complete(data: bytes) -> bool:
    """A whole response with a Content-Length is in (the server may keep the socket)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value)
    return False


def _parse(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines or not lines[0].startswith(b"HTTP/1."):
        return RawResponse(None, {}, data)
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, headers, body)


def login(url: str, username: str, password: str) -> str:
    response = httpx.post(f"{url}/api/tokens", json={"username": username, "password": password})
    response.raise_for_status()
    token: str = response.json()["token"]
    return token


def register(url: str, username: str, password: str) -> str:
    """Register ``username`` (if new) and return a token for it."""
    httpx.post(f"{url}/api/users/register", json={"username": username, "password": password})
    return login(url, username, password)


def json_bytes(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")
