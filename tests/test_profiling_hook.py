"""``GRIDSCHED_PROFILE``: the measuring aid of ``gridsched run`` (scheduler/cli/profiling.py)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import pstats
import signal
from pathlib import Path

import pytest

from scheduler.cli import profiling


def test_without_the_variable_nothing_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(profiling.ENV, raising=False)

    async def main() -> profiling.LoopProfile | None:
        return profiling.install(asyncio.get_running_loop())

    assert asyncio.run(main()) is None


def _busy() -> int:
    return sum(i * i for i in range(20_000))


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
def test_the_signals_mark_the_window_and_write_the_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "loop.pstats"
    monkeypatch.setenv(profiling.ENV, str(out))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        profile = profiling.install(loop)
        assert profile is not None and profile.profile is None  # nothing until SIGUSR1
        loop.call_soon(lambda: os.kill(os.getpid(), signal.SIGUSR1))
        while profile.profile is None:
            await asyncio.sleep(0.01)
        _busy()
        gc.collect()
        os.kill(os.getpid(), signal.SIGUSR2)
        while profile.profile is not None:
            await asyncio.sleep(0.01)
        profile.dump()  # a second write (as at shutdown) does nothing
        loop.remove_signal_handler(signal.SIGUSR1)
        loop.remove_signal_handler(signal.SIGUSR2)

    asyncio.run(main())
    stats = pstats.Stats(str(out))
    assert any(fn[2] == "_busy" for fn in stats.stats)  # type: ignore[attr-defined]
    summary = json.loads(Path(f"{out}.gc.json").read_text())
    assert summary["gc_runs"]["2"] >= 1
    assert summary["process_cpu_s"] >= 0.0
