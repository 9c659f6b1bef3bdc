"""One life of a VEN in a test, from start to stop: the import samples recorded before it
starts, what it waits for, and its status taken just before it stops; across restarts,
its reports and samples kept in a state file, as the daemon keeps them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.audit.store import Store
from tests.support.wait import until

if TYPE_CHECKING:
    from scheduler.service.ven import Ven


def record_span(ven: Ven, t0: float, span_s: int, kw: float, verified: bool) -> None:
    """Import samples of ``kw``, one each 10 s from ``t0`` for ``span_s`` seconds."""
    for s in range(0, span_s, 10):
        ven.record(t0 + s, kw, verified=verified)


async def run_until(
    ven: Ven, done: Callable[[], bool], timeout_s: float = 30.0, settle_s: float = 0.0
) -> dict[str, Any]:
    """Start ``ven``, wait until ``done()`` (AssertionError after ``timeout_s``), then
    ``settle_s`` more, and stop it: its status as it was before the stop."""
    await ven.start()
    await until(done, timeout_s, step_s=0.01)
    if settle_s:
        await asyncio.sleep(settle_s)
    st: dict[str, Any] = ven.status()
    await ven.stop()
    return st


async def rerun(ven: Ven) -> dict[str, Any]:
    """A restarted VEN's life: until the still-listed event's report is planned, then 0.3 s
    more (the reporter's loop ran several times with the event held)."""
    return await run_until(ven, lambda: len(ven.jobs()) == 1, settle_s=0.3)


@contextmanager
def kept(ven: Ven, db: Path) -> Iterator[None]:
    """``ven``'s reports and samples kept in the state file ``db`` (and those it holds taken
    up) while inside; the file closed after. Record samples inside, so they are kept."""
    store = Store(db)
    try:
        ven.reports.keep_in(store)
        yield
    finally:
        store.close()
