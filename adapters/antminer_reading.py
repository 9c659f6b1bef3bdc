"""A stock Antminer's reading: the four calls its Telemetry needs, at once.

Split from :mod:`adapters.antminer` (its commands and the kept web session) so that each
module does one job. The sources are pyasic's (``AntminerModern`` data locations), read
here without pyasic's ``MinerData``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

from adapters.antminer import _KIND, UNREACHABLE, WebSession
from adapters.base import BadReply, DeviceUnreachable, Telemetry
from adapters.payloads import asic_state


async def read(device_id: str, miner: Any, kept: WebSession, at: float) -> Telemetry:
    """One reading of a stock Antminer: the four calls its Telemetry needs, at once.

    The sources are pyasic's (``AntminerModern`` data locations): hashrate from the cgminer
    API's ``summary`` (``GHS 5s``, GH/s), chip temperatures from ``stats.cgi`` (per board,
    the mean of the non-zero ``temp_chip``; ``temp_pic[0]`` on an S21+ Hyd), the
    firmware's checks from ``summary.cgi`` (each ``status`` entry not "s" is an error) and
    the work mode from ``get_miner_conf.cgi`` (``bitmain-work-mode`` 1: asleep). As in
    pyasic, a part that fails is left out; without a hashrate there is no reading.
    """
    rpc_summary, conf, web_summary, stats = await asyncio.gather(
        _rpc(miner, "summary"),
        kept.get("get_miner_conf"),
        kept.get("summary"),
        kept.get("stats"),
    )
    ths: float | None = None
    with contextlib.suppress(LookupError, TypeError, ValueError):
        ths = float(rpc_summary["SUMMARY"][0]["GHS 5s"]) / 1000.0
    if ths is None or not math.isfinite(ths) or ths < 0:
        web = [r for r in (conf, web_summary, stats) if r.get("success") is False]
        if len(web) == 3 and all(r.get(_KIND) == UNREACHABLE for r in web):
            raise DeviceUnreachable(device_id, f"telemetry: {web[0]['message']}")
        raise BadReply(
            device_id, f"telemetry: no hashrate in the API's summary ({str(rpc_summary)[:120]})"
        )
    mining: bool | None = None
    mode = conf.get("bitmain-work-mode") if conf.get("success") is not False else None
    if mode is not None:
        mining = str(mode).isdigit() and int(mode) != 1
    kept.conf_asleep = None if mining is None else not mining
    return Telemetry(
        device_id=device_id,
        at=at,
        state=asic_state(None, ths, None, mining),
        power_w=None,  # stock firmware reports none (pyasic: no wattage data location)
        target_w=None,
        hashrate_ths=ths,
        temperatures_c=_chip_temp(stats, str(getattr(miner, "model", "") or "")),
        errors=_errors(web_summary),
    )


async def _rpc(miner: Any, command: str) -> Any:
    """A cgminer API call through pyasic's RPC client (one short connection, no auth);
    its failure is an empty answer, as pyasic's data functions treat it."""
    from pyasic.errors import APIError

    try:
        return await miner.rpc.send_command(command)
    except (APIError, OSError, ValueError):
        return {}


def _chip_temp(stats: dict[str, Any], model: str) -> tuple[float, ...]:
    temps: list[float] = []
    try:
        chains = stats["STATS"][0]["chain"]
        for board in chains:
            if "S21+ Hyd" in model:
                temps.append(float(board["temp_pic"][0]))
                continue
            chips = [float(x) for x in board["temp_chip"] if x]
            if chips:
                temps.append(sum(chips) / len(chips))
    except (LookupError, TypeError, ValueError):
        pass
    temps = [t for t in temps if t and math.isfinite(t)]
    return (max(temps),) if temps else ()


def _errors(summary: dict[str, Any]) -> tuple[str, ...]:
    try:
        return tuple(
            str(item["msg"])
            for item in summary["SUMMARY"][0]["status"]
            if isinstance(item, dict) and "msg" in item and item.get("status") != "s"
        )
    except (LookupError, TypeError):
        return ()
