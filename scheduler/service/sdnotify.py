"""systemd notifications (``sd_notify``) without libsystemd: READY, WATCHDOG, STOPPING, STATUS.

Under ``Type=notify`` systemd sets ``NOTIFY_SOCKET``; with ``WatchdogSec=`` it also sets
``WATCHDOG_USEC`` and restarts the service when no ``WATCHDOG=1`` arrives in time. The
daemon pings from its telemetry poll, so a wedged event loop or a stuck poll is restarted.
Outside systemd every call is a no-op.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET")
        self._addr: str | None = None
        if addr:
            self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() else None
        if pid.isdigit() and int(pid) != os.getpid():
            self.watchdog_s = None

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, *fields: str) -> bool:
        if self._addr is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(self._addr)
                s.sendall("\n".join(fields).encode())
            return True
        except OSError:
            return False

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self, status: str = "") -> None:
        self.send("WATCHDOG=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> None:
        self.send("STOPPING=1")
