"""What every request must pass before a route sees it: the Host it names, the
type of its body, and the time its body may take.

* **Host** (DNS rebinding): a web page can make a browser send requests to a
  loopback server under a name the page's author controls. Only the bound
  address, ``localhost`` (and its subdomains) and the names given with
  ``--allowed-host`` (``ServerConfig.allowed_hosts``; ``*.example.org``
  matches subdomains) are served; on a wildcard bind (``0.0.0.0``, ``::``)
  any IP address is too (rebinding needs a name). Others get 400, websockets
  included.
* **Content-Type**: a cross-site "simple" POST can send JSON labelled
  ``text/plain`` without the browser asking first; a body must be labelled
  ``application/json`` (415 otherwise), except an avatar's image body.
* **Body deadline** (slowloris): the body must arrive within
  ``http_body_timeout`` seconds of its headers; otherwise 408 and the
  connection is closed. The body is read here and handed on whole, so a route
  never waits on a slow client.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from concordctl.server.config import ServerConfig
from concordctl.server.responses import error_response

__all__ = ["HostPolicy", "RequestGuard"]

_WILDCARD_BINDS = frozenset(("", "0.0.0.0", "::", "[::]"))
#: Routes whose body is not JSON, and the limit of that body.
_RAW_BODY_PATHS = frozenset(("/api/self/avatar",))
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


class HostPolicy:
    """Which ``Host`` header values this server answers."""

    def __init__(self, config: ServerConfig) -> None:
        bound = config.host.strip().lower().strip("[]")
        #: Any IP address is accepted when the server listens on every interface.
        self.any_address = config.host.strip().lower() in _WILDCARD_BINDS
        self.names = frozenset({bound, "localhost"} | {h.lower() for h in config.allowed_hosts})
        self.patterns = tuple(n for n in self.names if "*" in n)

    def allows(self, header: bytes | None) -> bool:
        if header is None:
            return False
        try:
            host = header.decode("ascii").strip().lower()
        except UnicodeDecodeError:
            return False
        if host.startswith("["):  # [v6]:port
            end = host.find("]")
            if end == -1:
                return False
            name = host[1:end]
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        name = name.rstrip(".")
        if not name:
            return False
        if name in self.names or name.endswith(".localhost"):
            return True
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns):
            return True
        if self.any_address:
            try:
                ipaddress.ip_address(name)
            except ValueError:
                return False
            return True
        return False


class RequestGuard:
    """The Host check for every request; Content-Type and body deadline for HTTP."""

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.config = config
        self.hosts = HostPolicy(config)

    def host_allowed(self, scope: Scope) -> bool:
        hosts = [value for key, value in scope.get("headers", ()) if key == b"host"]
        return len(hosts) == 1 and self.hosts.allows(bytes(hosts[0]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if not self.host_allowed(scope):  # one Host, and ours
            message = "unknown Host: serve it with --allowed-host NAME"
            await error_response(path, 400, message, {})(scope, receive, send)
            return
        if scope.get("method") not in _BODY_METHODS or not self._has_body(scope):
            await self.app(scope, receive, send)
            return
        limit = self.config.max_body_bytes
        if path in _RAW_BODY_PATHS:
            limit = self.config.max_avatar_bytes
        else:
            media = (_header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
            if media != b"application/json":
                message = "Content-Type must be application/json"
                await error_response(path, 415, message, {})(scope, receive, send)
                return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self.app(scope, receive, send)  # the route answers 413 unread
            return
        try:
            async with asyncio.timeout(self.config.http_body_timeout):
                body, over = await self._read(receive, limit)
        except TimeoutError:
            message = f"request body not received within {self.config.http_body_timeout:g} s"
            response = error_response(path, 408, message, {"Connection": "close"})
            await response(scope, receive, send)
            return
        if body is None:
            return  # the client went away
        if over:
            message = f"request body larger than {limit} bytes"
            await error_response(path, 413, message, {"Connection": "close"})(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    @staticmethod
    def _has_body(scope: Scope) -> bool:
        length = _header(scope, b"content-length")
        if length is not None:
            return length.strip() not in (b"", b"0")
        return _header(scope, b"transfer-encoding") is not None

    @staticmethod
    async def _read(receive: Receive, limit: int) -> tuple[bytes | None, bool]:
        """The whole body (None if the client left), and whether it went past ``limit``."""
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None, False
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body read already, then waits as the original does."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
