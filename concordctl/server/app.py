"""The ASGI application: REST routes through Starlette, the websocket direct.

``build_app`` wires ``routes.py`` and ``websocket.py`` together with the
optional access log and CORS, behind the request guards of ``guards.py``.
"""

from __future__ import annotations

import logging
import time

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from concordctl.errors import redact_url
from concordctl.server.guards import HostPolicy, RequestGuard
from concordctl.server.routes import EXCEPTION_HANDLERS, ROUTES, InternalErrors
from concordctl.server.state import ServerState
from concordctl.server.websocket import client_socket, deny

__all__ = ["build_app"]

access_log = logging.getLogger("concordctl.server.access")


class AccessLog:
    """One info line per request: method, path (token redacted), status, time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # websockets log their own line
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [0]

        async def sending(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            target = scope.get("path", "") + ("?" + query if query else "")
            client = scope.get("client") or ("?", 0)
            method = scope.get("method", "?")
            access_log.info(
                '%s "%s %s" %s %.1fms',
                client[0],
                method,
                redact_url(target),
                status[0],
                (time.perf_counter() - started) * 1000,
            )


class _Dispatch:
    """The websocket straight to its handler; everything else to Starlette."""

    def __init__(self, state: ServerState, app: ASGIApp) -> None:
        self.state = state
        self.app = app
        self.hosts = HostPolicy(state.config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            hosts = [v for k, v in scope.get("headers", ()) if k == b"host"]
            if len(hosts) != 1 or not self.hosts.allows(hosts[0]):
                await receive()
                message = "unknown Host: serve it with --allowed-host NAME"
                await deny(scope, send, 400, message, {})
            elif scope.get("path") == "/client":
                await client_socket(self.state, scope, receive, send)
            else:
                await receive()
                await deny(scope, send, 404, "no such endpoint", {})
            return
        await self.app(scope, receive, send)


def build_app(state: ServerState) -> ASGIApp:
    middleware: list[Middleware] = []
    if state.config.log_requests:
        middleware.append(Middleware(AccessLog))
    if state.config.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(state.config.cors_origins),
                allow_methods=["GET", "POST", "PATCH", "DELETE"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    # Host, Content-Type and the body deadline (``guards.py``), before any route.
    middleware.append(Middleware(RequestGuard, config=state.config))
    middleware.append(Middleware(InternalErrors))  # innermost: bugs become a logged 500
    app = Starlette(routes=ROUTES, middleware=middleware, exception_handlers=EXCEPTION_HANDLERS)
    app.state.concord = state
    return _Dispatch(state, app)
