"""The HTTP transport under the REST client: every answer's body is size-capped.

An endless body once grew the client to gigabytes in seconds. This transport
wraps httpx's (or a test's) and fails a response as soon as its declared or
received size passes the request's cap: ``request.extensions[MAX_BODY]``
bytes, else ``default_cap``. Responses are asked for without compression
(``Accept-Encoding: identity`` is set by the REST client), so the bytes
counted are the bytes kept: no decompression bomb.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from concordctl.errors import ProtocolViolation
from concordctl.responses import MAX_BODY

__all__ = ["DEFAULT_MAX_BODY", "MAX_BODY", "CappedTransport"]

#: JSON answers: far above any page of the contract (100 chats of 64 KiB are 6.4 MiB).
DEFAULT_MAX_BODY = 8 * 2**20


def _too_large(request: httpx.Request, cap: int) -> ProtocolViolation:
    return ProtocolViolation(
        f"{request.method} {request.url.path} failed: the answer is larger than "
        f"{cap / 2**20:.0f} MiB, the most concordctl reads",
        hint="is this a Concord server? check the server URL",
    )


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, cap: int, request: httpx.Request) -> None:
        self._inner = inner
        self._cap = cap
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = 0
        async for chunk in self._inner:
            total += len(chunk)
            if total > self._cap:
                raise _too_large(self._request, self._cap)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class CappedTransport(httpx.AsyncBaseTransport):
    """``inner`` with every response body limited (see the module docstring)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, default_cap: int = DEFAULT_MAX_BODY):
        self.inner = inner
        self.default_cap = default_cap

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        cap = int(request.extensions.get(MAX_BODY, self.default_cap))
        response = await self.inner.handle_async_request(request)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            await response.aclose()
            raise _too_large(request, cap)
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _CappedStream(stream, cap, request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
