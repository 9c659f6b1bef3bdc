"""sd_notify over a real unix datagram socket, as systemd listens."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from scheduler.service.sdnotify import Notifier


def test_notifications_reach_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(10)  # a notification never sent fails the test instead of hanging it
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier()
    assert n.enabled and n.watchdog_s == 30.0
    n.ready("up")
    n.watchdog()
    n.stopping()
    got = [server.recv(1024).decode() for _ in range(3)]
    server.close()
    assert got == ["READY=1\nSTATUS=up", "WATCHDOG=1", "STOPPING=1"]


def test_outside_systemd_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert Notifier().send("READY=1") is False
