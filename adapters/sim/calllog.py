"""What a simulated miner was asked, kept for tests to read, and bounded.

A simulator records each call it answers (``grpc_calls``, ``web_calls``, ``writes``...) so
that a test can say what went on the wire. A simulated fleet of thousands of miners runs
for hours under ``gridsched fleet simulate`` and the benchmarks, and a plain list grew by
every call for as long: memory without bound. :class:`CallLog` is a list that keeps the
latest calls only (``keep`` of them at least, twice that at most) and counts them all.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

#: The calls kept per log and miner: far more than any test reads back.
KEEP = 1024


class CallLog(list[T]):
    """A list of the latest calls: appending past ``2 * keep`` drops all but the last
    ``keep`` (amortised, so that each append stays O(1)); ``total`` counts every call."""

    def __init__(self, keep: int = KEEP) -> None:
        if keep < 1:
            raise ValueError(f"CallLog keep={keep}: must be at least 1")
        super().__init__()
        self.keep = keep
        self.total = 0

    def append(self, item: T, /) -> None:
        super().append(item)
        self.total += 1
        if len(self) > 2 * self.keep:
            del self[: len(self) - self.keep]
