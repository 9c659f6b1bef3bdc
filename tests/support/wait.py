"""Waiting on a condition instead of sleeping a fixed time: a test polls until the state it
expects is there, with a deadline far beyond what a healthy run needs, so it passes on a slow,
loaded machine and fails only when the state never comes (the deadline names what it waited
for)."""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
import time
from collections.abc import Callable
from typing import IO, Any, TypeVar

T = TypeVar("T")

#: Long enough for a loaded 2-core machine (at load 20 a child's interpreter and imports
#: alone took 55 s); a healthy run returns within a second, so only a failure waits it out.
DEADLINE_S = 120.0


def wait_until(
    pred: Callable[[], T], timeout_s: float = DEADLINE_S, step_s: float = 0.05, what: str = ""
) -> T:
    """``pred()`` once it is truthy, polled every ``step_s``; AssertionError after
    ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            raise AssertionError(f"not reached within {timeout_s:g} s: {what or pred}")
        time.sleep(step_s)


async def until(
    pred: Callable[[], Any],
    timeout_s: float = DEADLINE_S,
    step_s: float = 0.02,
    what: str = "",
) -> Any:
    """The async form: ``pred`` may be a plain function or a coroutine function; its first
    truthy value is returned."""
    end = time.monotonic() + timeout_s
    while True:
        v = pred()
        if inspect.isawaitable(v):
            v = await v
        if v:
            return v
        if time.monotonic() >= end:
            raise AssertionError(f"not reached within {timeout_s:g} s: {what or pred}")
        await asyncio.sleep(step_s)


def readline(stream: IO[str] | None, timeout_s: float = DEADLINE_S) -> str:
    """One line from a child's pipe, or AssertionError after ``timeout_s`` (a child that
    hangs without printing fails the test instead of hanging it). The reading thread ends
    at the pipe's end, once the test kills the child."""
    assert stream is not None
    got: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: got.put(stream.readline()), daemon=True).start()
    try:
        return got.get(timeout=timeout_s)
    except queue.Empty:
        raise AssertionError(f"no line within {timeout_s:g} s") from None
