"""The embedded Concord-compatible server (``concordctl serve``, test fixtures).

Only ``concordctl.protocol`` and ``concordctl.errors`` are imported from the
rest of the package: the server never depends on the client.
"""

from __future__ import annotations

from concordctl.server.config import ServerConfig, default_db_path
from concordctl.server.runner import EmbeddedServer, ServerThread

__all__ = ["EmbeddedServer", "ServerConfig", "ServerThread", "default_db_path"]
