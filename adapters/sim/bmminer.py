"""bmminer's cgminer API on 4028, as both Antminer firmwares simulated here serve it:
stock Bitmain (:mod:`adapters.sim.antminer`) and VNish (:mod:`adapters.sim.vnish`), whose
API pyasic reads with the same ``BMMiner`` backend (``summary``'s ``SUMMARY[0]["GHS 5s"]``
as a string, ``stats``'s ``STATS[1]``: ``chain_acn*``, ``temp*``, ``temp2_*``, ``fan*``,
``total_rateideal``; ``pools``). Multicommands are refused, as bmminer refuses them.

What differs between the two is each firmware's own: the ``version`` reply (which discovery
reads), ``STATS[0]`` (what it names the miner), the fans it reports and what its
``temp<i>``/``temp2_<i>`` hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from adapters.sim.server import MinerServer

BMMINER_VERSION = "1.0.0"


@dataclass
class BmminerSim(MinerServer):
    """A simulated miner answering bmminer's ``summary``, ``stats`` and ``pools``; a
    subclass adds ``version`` and says its ``stats`` head, fans and temperatures."""

    description: ClassVar[str] = f"bmminer {BMMINER_VERSION}"
    multicommand: ClassVar[bool] = False  # pyasic's base RPC notes the S19 refuses them
    #: ``stats``: the fans listed (``fan1``..) and their speed while not hashing (stock
    #: firmware's by default)
    stats_fans: ClassVar[int] = 3
    idle_fan_rpm: ClassVar[int] = 0
    #: ``stats``: ``temp<i>`` and ``temp2_<i>`` as offsets from the simulated temperature
    temp_offsets_c: ClassVar[tuple[int, int]] = (-6, 6)

    def _stats_head(self) -> dict[str, Any]:
        """``STATS[0]``: the daemon's versions and the miner's type."""
        raise NotImplementedError

    def _cmd_summary(self, _: list[str]) -> dict[str, Any]:
        _w, ths = self._advance()
        self.state.accepted += 1 if ths > 0 else 0
        body = {
            "Elapsed": int(self.clock() - self.state.boot_at),
            "GHS 5s": f"{ths * 1000.0:.2f}",  # bmminer sends these as strings
            "GHS av": round(ths * 1000.0, 2),
            "Accepted": self.state.accepted,
            "Rejected": 0,
            "Hardware Errors": 0,
        }
        return self._ok(11, "Summary", "SUMMARY", [body])

    def _cmd_stats(self, _: list[str]) -> dict[str, Any]:
        _w, ths = self._advance()
        t = self.state.temp_c
        p = self.preset(self.state.profile)
        board: dict[str, Any] = {
            "STATS": 0,
            "ID": "BC50",
            "Elapsed": int(self.clock() - self.state.boot_at),
            "total_rateideal": round(p.ths * 1000.0, 2),
            "rate_unit": "GH",
            "fan_num": 4,
            "miner_count": 3,
        }
        for i in range(1, self.stats_fans + 1):
            board[f"fan{i}"] = 4800 if ths > 0 else self.idle_fan_rpm
        temp, temp2 = self.temp_offsets_c
        for i in (1, 2, 3):
            board[f"chain_rate{i}"] = f"{ths * 1000.0 / 3:.2f}"
            board[f"chain_acn{i}"] = 126
            board[f"temp{i}"] = round(t + temp)
            board[f"temp2_{i}"] = round(t + temp2)
        return self._ok(70, "BMMiner stats", "STATS", [self._stats_head(), board])

    def _cmd_pools(self, _: list[str]) -> dict[str, Any]:
        return self._ok(7, "1 Pool(s)", "POOLS", [self._pool()])
