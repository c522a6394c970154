"""The server's shared state: what every handler of one process reaches.

It only holds things: the actions live in ``actions.py``, the checks in
``checks.py``, the limits in ``limits.py``, presence in ``presence.py`` and
response encoding in ``responses.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from concordctl import protocol as p
from concordctl.server import auth
from concordctl.server.config import ServerConfig
from concordctl.server.fanout import Fanout, LocalFanout
from concordctl.server.hub import Hub
from concordctl.server.limits import Limits
from concordctl.server.presence import Presence
from concordctl.server.store import Store

__all__ = ["ServerState"]


@dataclass
class ServerState:
    """Everything the handlers share; lives as long as the EmbeddedServer."""

    config: ServerConfig
    store: Store
    signer: auth.TokenSigner
    hub: Hub = field(default_factory=Hub)
    presence: Presence = field(default_factory=Presence)
    #: Websocket handshakes are refused (503) until this monotonic time (fault injection).
    refuse_until: float = 0.0
    shutting_down: bool = False
    limits: Limits = field(init=False)
    #: Where events go: this node's hub, or every node's (``cluster.Cluster``).
    fanout: Fanout = field(init=False)

    def __post_init__(self) -> None:
        self.limits = Limits(self.config)
        self.fanout = LocalFanout(self.hub, self.presence.online)

    def broadcast(self, event: p.KnownEvent) -> None:
        """Queue ``event`` for every connected client of every node (encoded once)."""
        self.fanout.publish(p.encode_event(event).decode("utf-8"))
