"""The unit tier: no socket, no server, no sleeping; runs in seconds."""
