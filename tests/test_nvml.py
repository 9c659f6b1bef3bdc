"""The NVML adapter against a real NVIDIA GPU; skipped where NVML cannot start.

Run on a GPU machine with ``pytest -m gpu -s``: the test prints what NVML allowed and
measured, for docs/hardware.md. It restores the power limit it found.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from adapters.base import ModeRequest, Unsupported
from adapters.gpu import NvmlGpu, PynvmlBackend

pytestmark = pytest.mark.gpu


def _backend() -> tuple[PynvmlBackend, int]:
    backend = PynvmlBackend()
    try:
        n = asyncio.run(backend.count())
    except Unsupported as exc:
        pytest.skip(f"no NVML here: {exc.reason}")
    if n == 0:
        pytest.skip("NVML started but sees no GPU")
    return backend, n


def test_nvml_reads_and_caps_a_real_gpu() -> None:
    backend, n = _backend()
    dev = NvmlGpu("gpu/0", "0", backend, 0, 5.0)

    async def go() -> None:
        info = await dev.connect()
        t0 = await dev.read()
        print(f"\n{n} GPU(s); gpu0 {info.model} limits [{info.min_power_w}, {info.max_power_w}] W")
        print(
            f"read: {t0.power_w:.1f} W, limit {t0.target_w} W, energy {t0.energy_j} J, "
            f"util {t0.utilisation_pct} %, SM {t0.sm_clock_mhz} MHz, {t0.temperatures_c} C"
        )
        assert t0.power_w is not None and t0.power_w > 0
        assert info.min_power_w is not None and info.max_power_w is not None
        assert info.min_power_w <= (t0.target_w or 0) <= info.max_power_w
        original = t0.target_w
        target = round((info.min_power_w + info.max_power_w) / 2)
        try:
            t = time.perf_counter()
            applied = await dev.apply(ModeRequest("run", target))
            set_s = time.perf_counter() - t
            back = await dev.read()
            print(f"set {target} W in {set_s * 1000:.1f} ms; read back {back.target_w} W")
            assert back.target_w == pytest.approx(applied.target_w, abs=1.0)
        except Unsupported as exc:
            print(f"setting the limit refused: {exc.reason}")
            pytest.skip(f"NVML refuses power limits here: {exc.reason}")
        finally:
            if original is not None:
                with contextlib.suppress(Unsupported):
                    await dev.apply(ModeRequest("run", original))
        e1 = (await dev.read()).energy_j
        assert e1 is not None and t0.energy_j is not None and e1 >= t0.energy_j

    asyncio.run(go())
