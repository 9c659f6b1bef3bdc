"""What ``gridsched fleet status`` prints: a summary per device class (health, state,
power, hashrate, tokens, firmware), the devices not healthy (or all, ``--all``) with what
discovery found and what was read back, or every device as one JSON document
(``--json``). The command that connects and reads the fleet is
:mod:`scheduler.cli.fleet`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from adapters.base import CLOCKS_UNKNOWN, Health, Telemetry
from adapters.fleet import Fleet
from scheduler.cli.report import table


def _identity(fleet: Fleet, device_id: str) -> dict[str, str]:
    """What discovery found: make, model, firmware (family) and its version."""
    info = fleet.by_id[device_id].info
    if info is None:
        return {}
    return {
        "make": info.make,
        "model": info.model,
        "firmware": info.firmware,
        "firmware_version": info.firmware_version,
        "serial": info.serial,
        "family": info.family,
    }


def make_model(make: str, model: str) -> str:
    """ "NVIDIA H100 SXM", not "NVIDIA NVIDIA H100 SXM": NVML's and most firmware's model
    names already begin with the make."""
    if make and model.lower().startswith(make.lower()):
        return model
    return " ".join(x for x in (make, model) if x) or "-"


def _firmware_label(fleet: Fleet, ids: list[str]) -> str:
    """The firmware of a class's devices, in words ("Stock 2023-12-14 ...", or a count)."""
    seen: dict[str, int] = {}
    for i in ids:
        info = fleet.by_id[i].info
        if info is not None and (info.firmware or info.make):
            label = " ".join(x for x in (info.make, info.firmware, info.firmware_version) if x)
            seen[label] = seen.get(label, 0) + 1
    if not seen:
        return "-"
    if len(seen) == 1:
        return next(iter(seen))[:48]
    return f"{len(seen)} kinds"


def _summary(fleet: Fleet, readings: dict[str, Telemetry]) -> list[list[str]]:
    rows = []
    for group in sorted({st.group for st in fleet.status.values()}):
        ids = fleet.ids(group)
        health = {h: 0 for h in Health}
        for i in ids:
            health[fleet.status[i].health] += 1
        ts = [readings[i] for i in ids if i in readings]
        power = sum(t.power_w or 0.0 for t in ts) / 1000.0
        # Stock firmware reports no power: those units are not at 0 kW, just not metered;
        # nor are the units this sweep could not read (unreachable, unreadable).
        unmetered = sum(t.power_w is None for t in ts)
        unread = len(ids) - len(ts)
        kw = f"{power:,.1f}" + (f" +{unmetered} unmetered" if unmetered else "")
        if unread:
            kw = f"{kw} +{unread} unread" if ts else f"- ({unread} unread)"
        ths = sum(t.hashrate_ths or 0.0 for t in ts)
        tok = sum(t.tokens_s or 0.0 for t in ts)
        # a GPU serving whose throughput no reading has given yet is not at 0 tokens/s
        unknown_tok = sum(
            1
            for i in ids
            if (t := readings.get(i)) is not None
            and t.state == "running"
            and t.tokens_s is None
            and _is_gpu(fleet, i)
        )
        running = sum(t.state == "running" for t in ts)
        sleeping = sum(t.state == "sleeping" for t in ts)
        rows.append(
            [
                group,
                str(len(ids)),
                str(health[Health.OK]),
                str(health[Health.DEGRADED]),
                str(health[Health.UNREACHABLE]),
                str(health[Health.UNREADABLE]),
                str(health[Health.REJECTED]),
                str(health[Health.UNCONFIRMED]),
                str(running),
                str(sleeping),
                kw,
                f"{ths:,.0f}",
                f"{tok:,.0f}" + (f" +{unknown_tok} unknown" if unknown_tok else ""),
                _firmware_label(fleet, ids),
            ]
        )
    return rows


def print_status(
    args: argparse.Namespace,
    fleet: Fleet,
    readings: dict[str, Telemetry],
    connect_s: float,
    sweep_s: float,
) -> None:
    if args.json:
        doc = {
            "at": time.time(),
            "sweep_s": round(sweep_s, 4),
            "devices": [
                {
                    "id": st.device_id,
                    "class": st.group,
                    "health": st.health.value,
                    "error": st.last_error,
                    **_identity(fleet, st.device_id),
                    **(
                        {
                            k: v
                            for k, v in readings[st.device_id].__dict__.items()
                            if k not in ("device_id",)
                        }
                        if st.device_id in readings
                        else {}
                    ),
                    **_gpu_fields(fleet, st.device_id, readings.get(st.device_id)),
                }
                for st in fleet.status.values()
            ],
        }
        json.dump(doc, sys.stdout, default=list)
        sys.stdout.write("\n")
        return
    head = [
        "class",
        "units",
        "ok",
        "degraded",
        "unreachable",
        "unreadable",
        "rejected",
        "unconfirmed",
        "running",
        "sleeping",
        "kW",
        "TH/s",
        "tokens/s",
        "firmware",
    ]
    print(table(head, _summary(fleet, readings)))
    print(f"connected in {connect_s:.2f} s; telemetry sweep {sweep_s * 1000:.0f} ms")
    shown = [st for st in fleet.status.values() if args.all or st.health is not Health.OK]
    if shown:
        rows = []
        for st in shown[: args.limit]:
            t = readings.get(st.device_id)
            ident = _identity(fleet, st.device_id)
            rows.append(
                [
                    st.device_id,
                    make_model(ident.get("make", ""), ident.get("model", "")),
                    " ".join(x for x in (ident.get("firmware"), ident.get("firmware_version")) if x)
                    or "-",
                    st.health.value,
                    t.state if t else "-",
                    f"{t.power_w:,.0f}" if t and t.power_w is not None else "-",
                    f"{t.target_w:,.0f}" if t and t.target_w is not None else "-",
                    _lock_text(t) if _is_gpu(fleet, st.device_id) else "-",
                    f"{t.hashrate_ths:,.1f}" if t and t.hashrate_ths is not None else "-",
                    f"{t.max_temp_c:.0f}" if t and t.max_temp_c is not None else "-",
                    error_text(st.device_id, st.last_error),
                ]
            )
        print(
            table(
                [
                    "device",
                    "make/model",
                    "firmware",
                    "health",
                    "state",
                    "W",
                    "target/limit W",  # a miner's power target, a GPU's power limit
                    "SM lock",
                    "TH/s",
                    "°C",
                    "last error",
                ],
                rows,
            )
        )
        if len(shown) > args.limit:
            print(f"... {len(shown) - args.limit} more (--limit)")


def error_text(device_id: str, error: str | None, width: int = 160) -> str:
    """A device's last error for its row: without the device's name, which the row has
    (errors start with it; cut at 80 characters, a GPU agent's error lost its cause), and
    at most ``width`` characters, marked when cut."""
    text = error or ""
    if text.startswith(f"{device_id}: "):
        text = text[len(device_id) + 2 :]
    return text if len(text) <= width else text[: width - 1] + "…"


def _is_gpu(fleet: Fleet, device_id: str) -> bool:
    adapter = fleet.by_id.get(device_id)
    return adapter is not None and adapter.kind == "gpu"


def _lock_text(t: Telemetry | None) -> str:
    """A GPU's SM clock lock as read back: its range, "none" (the driver's clocks) or
    "unknown" (NVML cannot read a lock back, and a reader sets none)."""
    if t is None:
        return "-"
    lock = t.sm_clock_lock_mhz
    if lock is None:
        return "none"
    if lock == CLOCKS_UNKNOWN:
        return "unknown"
    return f"{lock[0]}-{lock[1]} MHz"


def _gpu_fields(fleet: Fleet, device_id: str, t: Telemetry | None) -> dict[str, Any]:
    """A GPU's power limit and SM clock lock read back, by name (``--json``)."""
    if t is None or not _is_gpu(fleet, device_id):
        return {}
    return {"power_limit_w": t.target_w, "sm_clock_lock": _lock_text(t).removesuffix(" MHz")}
