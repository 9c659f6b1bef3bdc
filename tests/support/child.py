"""A program the test starts (a broker, Prometheus), its output read by a thread so that no
read blocks the test and no unread pipe fills and stalls the child; the test waits for the
line that says the child is ready, or for its exit, with a deadline.

Ports: a program that can listen on port 0 and print the port it got (Prometheus's "Listening
on" line) is started on port 0. One that cannot (mosquitto refuses port 0) is given a port the
OS called free a moment before, and started again on a fresh one when its output says that
port was taken in between (``start_on_a_free_port``): the check is the child's own bind, not a
probe that another process's listener could answer.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

from tests.support.wait import DEADLINE_S

ADDRESS_IN_USE = re.compile(r"address already in use", re.IGNORECASE)


class Child:
    """``argv`` as a process, stdout and stderr together, every line kept in ``lines``."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_line(self, pattern: re.Pattern[str], timeout_s: float = DEADLINE_S) -> re.Match[str]:
        """The first output line matching ``pattern``; AssertionError when the child's output
        ends (it exited) or ``timeout_s`` passes first, with what it printed."""
        end = time.monotonic() + timeout_s
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if (m := pattern.search(line)) is not None:
                        return m
                seen = len(self.lines)
                left = end - time.monotonic()
                if self._ended or left <= 0:
                    why = "exited" if self._ended else f"not ready within {timeout_s:g} s"
                    out = "".join(self.lines)[-2000:]
                    raise AssertionError(f"{self.argv[0]} {why}:\n{out}")
                self._changed.wait(left)

    def stop(self) -> None:
        """SIGTERM, again each second, then SIGKILL if it does not go within 10 s.

        Again, because a child may lose the first one: mosquitto 2.0 sent SIGTERM just after
        its "running" line carries on serving (its start-up sets its run flag again after
        the handler cleared it), and each such stop waited out the 10 s."""
        end = time.monotonic() + 10.0
        while self.proc.poll() is None and time.monotonic() < end:
            self.proc.terminate()
            try:
                self.proc.wait(1.0)
            except subprocess.TimeoutExpired:
                continue
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)


def free_port() -> int:
    """A port the OS calls free now; only for a program that must be told its port, through
    ``start_on_a_free_port`` (which starts it again when another process took it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_on_a_free_port(
    argv: Callable[[int], Sequence[str]],
    ready: re.Pattern[str],
    tries: int = 5,
    port: int | None = None,
    timeout_s: float = DEADLINE_S,
) -> tuple[Child, int]:
    """The child started by ``argv(port)`` once it printed ``ready``; when it says its port
    was in use, again on a fresh port (``port``, when given, is tried first: a restart)."""
    for attempt in range(tries):
        p = port if port is not None and attempt == 0 else free_port()
        child = Child(argv(p))
        try:
            child.wait_line(ready, timeout_s)
            return child, p
        except AssertionError:
            child.stop()
            if attempt + 1 == tries or not ADDRESS_IN_USE.search(child.output()):
                raise
    raise AssertionError("unreachable")  # the loop returns or raises
