"""Loopback ports for the tests of a connection refused: what the adapters and the daemon
call it, in words."""

from __future__ import annotations

import socket


def closed_port() -> int:
    """A loopback port that was just free: nothing listens there, a connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
