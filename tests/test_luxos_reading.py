"""A LuxOS reading asks for the profile table only when it may have changed: the first
reading, a profile in force that the table held does not list, and a table older than
LUXOS_PROFILES_MAX_AGE_S; every reading still reports its profile's watts and state."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from typing import Any

from adapters.asic import PyasicMiner
from adapters.base import Telemetry
from adapters.payloads import LUXOS_TELEMETRY, LUXOS_TELEMETRY_FULL
from adapters.sim.luxos import LuxosSim
from adapters.sim.physics import Preset
from tests.support.simfleet import loopback_host


def _recording(sim: LuxosSim) -> list[str]:
    """The commands of the telemetry requests the simulator answers, in order."""
    seen: list[str] = []
    answer = sim.answer

    def recorded(raw: bytes) -> dict[str, Any]:
        if LUXOS_TELEMETRY.encode() in raw:
            seen.append(LUXOS_TELEMETRY_FULL if b"profiles" in raw else LUXOS_TELEMETRY)
        return answer(raw)

    sim.answer = recorded  # type: ignore[method-assign]
    return seen


def test_the_profile_table_is_read_first_when_unknown_and_when_old() -> None:
    host = loopback_host()

    async def go() -> list[Telemetry]:
        sim = LuxosSim(host)
        await sim.start()
        seen = _recording(sim)
        dev = PyasicMiner(f"lux/{host}", host, timeout_s=10.0, sessions=False)
        try:
            await dev.connect()
            out = [await dev.read(), await dev.read()]
            assert seen == [LUXOS_TELEMETRY_FULL, LUXOS_TELEMETRY]
            # A profile created and set behind the adapter's back: the reading that finds
            # it asks again, with the table, and reports the new profile's watts.
            custom = Preset("custom", 2500.0, 88.0, 480, 13.0)
            sim.presets = (*sim.presets, custom)
            sim.set_profile("custom")
            out.append(await dev.read())
            assert seen[2:] == [LUXOS_TELEMETRY, LUXOS_TELEMETRY_FULL]
            out.append(await dev.read())
            assert seen[4:] == [LUXOS_TELEMETRY]
            # Re-tuned under the same name: seen once the table is old.
            sim.presets = tuple(
                replace(p, watts=2400.0) if p.name == "custom" else p for p in sim.presets
            )
            dev._lux_profiles_at = -math.inf
            out.append(await dev.read())
            assert seen[5:] == [LUXOS_TELEMETRY_FULL]
            return out
        finally:
            await dev.close()
            await sim.stop()

    first, second, custom, again, retuned = asyncio.run(go())
    assert first.target_w == second.target_w and first.target_w is not None
    assert first.state == second.state == "running"
    assert custom.target_w == again.target_w == 2500.0
    assert retuned.target_w == 2400.0
