"""The HTTP transports under the REST client.

:class:`CappedTransport`: every answer's body is size-capped. An endless body
once grew the client to gigabytes in seconds. This transport wraps httpx's
(or a test's) and fails a response as soon as its declared or received size
passes the request's cap: ``request.extensions[MAX_BODY]`` bytes, else
``default_cap``. Responses are asked for without compression
(``Accept-Encoding: identity`` is set by the REST client), so the bytes
counted are the bytes kept: no decompression bomb.

:class:`ThreadedTransport`: httpx's blocking transport, each request in a
daemon thread of its own, for a client that lives for one command line (see
its docstring for why).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import httpx

from concordctl.errors import ProtocolViolation
from concordctl.responses import MAX_BODY

__all__ = ["DEFAULT_MAX_BODY", "MAX_BODY", "CappedTransport", "ThreadedTransport"]

T = TypeVar("T")

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


class ThreadedTransport(httpx.AsyncBaseTransport):
    """httpx's blocking transport under the async client, one daemon thread per request.

    httpx's asyncio transport runs on httpcore, which needs anyio under
    asyncio: about 30 ms of imports, a sixth of a whole ``concordctl send``,
    paid by every CI step that posts a chat. httpx's blocking transport
    needs none of it, and run in a thread it does not block the event loop,
    so every layer above (the token's renewal, retries, the size cap, the
    command's deadline) is the same code as with the asyncio transport.

    A request whose caller stops waiting (the command's deadline, Ctrl-C) is
    abandoned in its daemon thread, which ends at its own read timeout or
    with the process. The body is read in the thread, at most one byte past
    the request's cap (none of it when the declared length is past it), so
    :class:`CappedTransport` around this one still refuses an oversized
    answer, and this one never holds more than that. Long-lived
    clients (a bot, ``tail``) are better served by httpx's pool.
    """

    def __init__(self, *, verify: Any = True) -> None:
        self._sync = httpx.HTTPTransport(verify=verify, trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(request.stream, httpx.SyncByteStream):
            request.stream = httpx.ByteStream(await request.aread())
        cap = int(request.extensions.get(MAX_BODY, DEFAULT_MAX_BODY))
        response, body = await _in_daemon_thread(self._exchange, request, cap)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=body,
            extensions=response.extensions,
            request=request,
        )

    def _exchange(self, request: httpx.Request, cap: int) -> tuple[httpx.Response, bytes]:
        """One request, blocking; the body read up to one byte past ``cap``."""
        response = self._sync.handle_request(request)
        body = bytearray()
        try:
            declared = response.headers.get("content-length", "")
            if not (declared.isdigit() and int(declared) > cap):
                for chunk in response.iter_raw():
                    body += chunk
                    if len(body) > cap:
                        break
        finally:
            response.close()
        return response, bytes(body)

    async def aclose(self) -> None:
        self._sync.close()


async def _in_daemon_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a new daemon thread; a caller that stops waiting leaves it to finish."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if outcome.done():
            return  # the caller stopped waiting
        if error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(result)

    def run() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn(*args)
        except BaseException as exc:  # raised in the waiting task instead
            error = exc
        # A closed loop (RuntimeError): nobody waits for this answer any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="concordctl-http", daemon=True).start()
    return await outcome
