"""A daemon in the test's own process, its API served over real HTTP on 127.0.0.1 port 0 by
uvicorn (the server ``gridsched run`` uses, with the same settings) from an event loop in a
thread: a test of the API gets a fresh daemon of its own for the price of opening it (no
interpreter to start, no imports), and may still call it from a child process (the CLI).

The daemon is opened (store, fleet, one poll; no jobs): what a request does is done by the
request itself (a signal stored, the fast path run), as in the daemon process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tests.support.wait import DEADLINE_S, wait_until

if TYPE_CHECKING:
    from scheduler.service.daemon import Daemon

T = TypeVar("T")


@dataclass(frozen=True)
class Served:
    """Where the served daemon answers, and its state file (what ``DaemonProc`` offers)."""

    url: str
    db: Path
    daemon: Daemon
    loop: asyncio.AbstractEventLoop

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = DEADLINE_S) -> T:
        """``coro`` run on the daemon's own event loop (as its jobs would run it, e.g.
        ``daemon.replan()``), its result or exception here."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)


@contextlib.contextmanager
def served(daemon: Daemon) -> Iterator[Served]:
    """``daemon`` opened and its API served until the block ends; then closed."""
    import uvicorn

    from scheduler.service.api import create_app
    from scheduler.service.http import server_options

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # the OS picks; the server listens on this very socket
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(daemon),
            log_level="warning",
            access_log=False,
            lifespan="off",
            **server_options(daemon.config.daemon),
        )
    )
    failed: list[BaseException] = []
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        try:
            await daemon.open()
            try:
                await server.serve(sockets=[sock])  # until should_exit
            finally:
                await daemon.close()
        except BaseException as exc:  # said in the test's thread, not lost in this one
            failed.append(exc)
            server.started = False

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or failed or not thread.is_alive(), DEADLINE_S,
                   what="the in-process API serving")  # fmt: skip
        if failed or not server.started:
            raise AssertionError(f"the in-process daemon did not serve: {failed!r}")
        yield Served(f"http://127.0.0.1:{port}", daemon.db_path, daemon, loops[0])
    finally:
        server.should_exit = True
        thread.join(DEADLINE_S)
        sock.close()
    if failed:
        raise failed[0]
