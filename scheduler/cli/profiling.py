"""A hidden switch for profiling ``gridsched run`` where it runs: ``GRIDSCHED_PROFILE=PATH``.

With it set, ``SIGUSR1`` starts profiling the daemon's event-loop thread (where the polls,
commands, API and metrics renders run) with cProfile on that thread's own CPU clock (again:
what was gathered is dropped), so that a benchmark marks the phase it wants and the start's
discovery is not slowed; ``SIGUSR2`` stops and writes ``PATH`` (``pstats`` format) and
``PATH.gc.json`` (the garbage collector's runs per generation and the loop thread's CPU they
took); so does stopping the daemon while a profile runs. Not a documented option: a measuring aid
(docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("gridsched")

ENV = "GRIDSCHED_PROFILE"


class LoopProfile:
    """cProfile on the loop thread's CPU clock, with the collector's runs beside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.profile: cProfile.Profile | None = None
        self.gc_runs: dict[int, int] = {}
        self.gc_cpu_s: dict[int, float] = {}
        self.gc_collected = 0
        self._gc_started: float | None = None
        self.started_cpu_s = 0.0
        self.started_wall_s = 0.0

    def start(self) -> None:
        """Start (again): what was gathered before is dropped."""
        if self.profile is not None:
            self.profile.disable()
        self.gc_runs, self.gc_cpu_s, self.gc_collected = {}, {}, 0
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        self.started_cpu_s, self.started_wall_s = time.process_time(), time.monotonic()
        self.profile = cProfile.Profile(time.thread_time)
        self.profile.enable()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.thread_time()
            return
        if self._gc_started is None:
            return
        generation = int(info.get("generation", -1))
        self.gc_runs[generation] = self.gc_runs.get(generation, 0) + 1
        spent = time.thread_time() - self._gc_started
        self.gc_cpu_s[generation] = self.gc_cpu_s.get(generation, 0.0) + spent
        self.gc_collected += int(info.get("collected", 0))
        self._gc_started = None

    def dump(self) -> None:
        """Stop and write the profile and the collector's figures (once per start)."""
        if self.profile is None:
            return
        self.profile.disable()
        self.profile.dump_stats(str(self.path))
        self.profile = None
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        summary = {
            "wall_s": time.monotonic() - self.started_wall_s,
            "process_cpu_s": time.process_time() - self.started_cpu_s,
            "gc_runs": {str(k): v for k, v in sorted(self.gc_runs.items())},
            "gc_cpu_s": {str(k): round(v, 4) for k, v in sorted(self.gc_cpu_s.items())},
            "gc_collected": self.gc_collected,
            "gc_frozen": gc.get_freeze_count(),
            "gc_counts": list(gc.get_count()),
            "gc_threshold": list(gc.get_threshold()),
        }
        Path(f"{self.path}.gc.json").write_text(json.dumps(summary, indent=1) + "\n")
        log.warning("profile written to %s", self.path)


def install(loop: asyncio.AbstractEventLoop) -> LoopProfile | None:
    """The profile when ``$GRIDSCHED_PROFILE`` names a path (started by SIGUSR1, on this
    thread, which must be the loop's), else None."""
    where = os.environ.get(ENV)
    if not where:
        return None
    profile = LoopProfile(Path(where))
    loop.add_signal_handler(signal.SIGUSR1, profile.start)
    loop.add_signal_handler(signal.SIGUSR2, profile.dump)
    return profile
