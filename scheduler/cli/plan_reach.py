"""What an offline plan (``gridsched plan``) knows of the modes each miner class can reach.

The daemon bounds each mode by the devices that can reach it, from what discovery found
(``scheduler.service.daemon.reach``): a stock Antminer runs at its own setting, a
Whatsminer at most at its standard power. An offline plan has no devices. Where a class's
adapter names its firmware (``kind = "sim"`` with ``sim_firmware``) the same bound applies
here; where it does not (``pyasic``, ``asic_rs``: the firmware is known only once a miner
answers), the plan's notes say that the daemon may offer fewer modes (the mixed-fleet
walk of session 25: the plan counted stock miners in turbo and eco, and Whatsminers in
turbo, which their firmware never reaches, and said nothing).
"""

from __future__ import annotations

from collections.abc import Callable

from adapters.base import DeviceInfo
from models.devices import DeviceKind
from models.firmware import SIM_FIRMWARE_FAMILY
from models.site import SiteConfig
from scheduler.planner.inputs import PlanInputs
from scheduler.service.daemon.reach import bound_inputs, class_reach

__all__ = ["bound_offline"]


def _every(info: DeviceInfo) -> Callable[[str], DeviceInfo | None]:
    """The identity every unit of a simulated class has: its firmware's."""
    return lambda _device_id: info


def bound_offline(config: SiteConfig, inputs: PlanInputs) -> None:
    """Bound the modes of each simulated miner class by what its firmware reaches, and
    note the classes whose firmware an offline plan cannot know."""
    reaches = {}
    unknown = []
    for c, dc in enumerate(config.devices):
        if dc.kind is not DeviceKind.ASIC or dc.adapter is None:
            continue
        family = SIM_FIRMWARE_FAMILY.get(str(dc.adapter.sim_firmware or "luxos"))
        if str(dc.adapter.kind) != "sim" or family is None:
            unknown.append(dc.name)
            continue
        info = DeviceInfo(f"{dc.name}/0", "asic", "", model=dc.model or "", family=family.value)
        ids = [f"{dc.name}/{i}" for i in range(dc.units)]
        reaches[c] = class_reach(dc, ids, _every(info), lambda _i: frozenset())
    bound_inputs(inputs, reaches, [dc.name for dc in config.devices])
    if unknown:
        inputs.notes.append(
            f"{', '.join(unknown)}: the firmware is known once the miners answer; the daemon "
            "then offers each mode only the miners that can reach it (a stock Antminer runs "
            "at its own setting, a Whatsminer at most at its standard power), which this "
            "offline plan cannot"
        )
