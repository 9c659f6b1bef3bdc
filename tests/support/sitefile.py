"""Site files as text, for the tests and benchmarks that give a daemon a site of their own.

``site_text`` writes what they share: a [site] on demo prices, a [daemon] planning two hours
in five-minute steps, then the device classes; each caller states only what it varies (its
name, the fields and sections it sets). ``device_classes`` writes device classes,
``mixed_devices`` the two miner classes and the GPU class of the daemon parts tests and the
daemon benchmarks, and ``sim_s19s`` is a class of simulated miners. Values are written as
TOML: str quoted, bool, int and float as they are, lists, and dicts as inline tables; a
field whose value is None is left out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

#: [daemon] as most in-memory sites set it: plan 2 h in 5 min steps, stage nothing ahead,
#: confirm at the first read-back.
DAEMON: Mapping[str, Any] = {
    "horizon": "2h",
    "step": "5min",
    "stage_ahead_s": 0,
    "confirm_after_s": 0,
}

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_value(v: Any) -> str:
    """``v`` as a TOML value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML value for {v!r}")


def _key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else json.dumps(k)


def table(header: str, fields: Mapping[str, Any]) -> str:
    """``[header]`` and a line per field (None: left out)."""
    lines = [header] + [f"{_key(k)} = {toml_value(v)}" for k, v in fields.items() if v is not None]
    return "\n".join(lines) + "\n"


def device_classes(*classes: Mapping[str, Any]) -> str:
    """A ``[[devices]]`` table per class (its fields in order)."""
    return "\n".join(table("[[devices]]", c) for c in classes)


def mixed_devices(old: int = 4, new: int = 4, gpus: int = 2) -> str:
    """Two miner classes of the same power, "old" (50 TH/s) and "new" (100 TH/s), and a GPU
    class "gpu" with two modes."""
    return device_classes(
        {"name": "old", "kind": "asic", "count": old, "modes": [_stock(50)]},
        {"name": "new", "kind": "asic", "count": new, "modes": [_stock(100)]},
        {
            "name": "gpu",
            "kind": "gpu",
            "count": gpus,
            "modes": [
                {"name": "full", "power_kw": 0.7, "throughput_tokens_s": 1000},
                {"name": "low", "power_kw": 0.35, "throughput_tokens_s": 600},
            ],
        },
    )


def _stock(ths: float) -> dict[str, Any]:
    return {"name": "stock", "power_kw": 3.0, "hashrate_ths": ths}


def stock_s19s(count: int) -> dict[str, Any]:
    """A class of ``count`` miners with one mode, stock: 3 kW and 100 TH/s each."""
    return {"name": "s19", "kind": "asic", "count": count, "modes": [_stock(100)]}


#: Four miners of each class and two GPUs: the daemon parts tests' fleet.
MIXED_DEVICES = mixed_devices()


def sim_s19s(count: int, base: str) -> dict[str, Any]:
    """A class of ``count`` simulated S19j Pros on loopback addresses from ``base``, asleep
    in 0.2 s and awake in 0.4 s."""
    return {
        "name": "s19",
        "kind": "asic",
        "model": "S19j Pro",
        "count": count,
        "adapter": {
            "kind": "sim",
            "sim_base": base,
            "sim_sleep_s": 0.2,
            "sim_wake_s": 0.4,
            "timeout_s": 10,
        },
    }


def site_text(
    name: str,
    *,
    interconnect_kw: float = 100,
    pue: float | None = 1.0,
    site: Mapping[str, Any] | None = None,
    prices: Mapping[str, Any] | None = None,
    hashprice: float | None = 0.08,
    inference: Mapping[str, Any] | None = None,
    daemon: Mapping[str, Any] | None = DAEMON,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
    devices: str = MIXED_DEVICES,
) -> str:
    """A site file: [site] ``name`` (``interconnect_kw``, ``pue``, then ``site``'s fields);
    [prices] (demo prices unless ``prices``); [mining] at ``hashprice`` USD/TH/day;
    [inference] and [daemon] with these fields (None: no such section); each of
    ``sections`` (name: fields) in turn; then ``devices``."""
    head = {"name": name, "interconnect_kw": interconnect_kw, "pue": pue, **(site or {})}
    parts = [table("[site]", head), table("[prices]", prices or {"format": "demo"})]
    if hashprice is not None:
        parts.append(table("[mining]", {"hashprice_usd_per_ths_day": hashprice}))
    if inference is not None:
        parts.append(table("[inference]", inference))
    if daemon is not None:
        parts.append(table("[daemon]", daemon))
    for header, fields in (sections or {}).items():
        parts.append(table(f"[{header}]", fields))
    parts.append(devices)
    return "\n".join(parts)
