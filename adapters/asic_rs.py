"""ASIC miners through pyasic-rs (the Python bindings of asic-rs, by pyasic's author):
``[devices.adapter] kind = "asic-rs"``, an optional back-end beside pyasic.

asic-rs spends 3-11x less CPU per command than pyasic (docs/performance.md, "Miner
clients"), but it drives fewer firmware families against what the conformance suite
(tests/test_families.py) checks, so this adapter drives only the families that passed it
and refuses the others per device, with the reason, at connect (which families, what
asic-rs reads and sets on each, and why the others are refused:
:mod:`adapters.asic_rs_families`).

A family asic-rs does not identify at all is refused the same way when the address
answers on a miner port; an address where nothing answers is unreachable. Every call is
contained as in :mod:`adapters.base`; asic-rs answers a failed read with empty fields
(``is_mining`` False), so a reading with neither power nor hashrate is unreadable, never
a sleeping miner at 0 kW. What this adapter shares with the pyasic one (the read-back
deadlines, the identity reported, what a reading makes it believe) is
:mod:`adapters.asic_miner`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from adapters.asic_miner import REDISCOVER_S, AsicMiner
from adapters.asic_rs_families import (
    NO_TARGET,
    USE_PYASIC,
    capabilities,
    family_of_rs,
    refusal,
)
from adapters.base import (
    Applied,
    BadReply,
    ControlRejected,
    DeviceInfo,
    DeviceUnreachable,
    ModeRequest,
    Telemetry,
    contain,
)
from adapters.payloads import RUNNING_SHARE, SLEEPING_MAX_W, field_words, run_target
from models.firmware import Family, PowerTarget

#: The families' policy is re-exported: callers and tests name it through the adapter.
__all__ = [
    "KEEP_FIELDS",
    "AsicRsMiner",
    "FamilyRefused",
    "capabilities",
    "family_of_rs",
    "parse_rs_data",
    "refusal",
]

#: Ports asic-rs probes for a miner (web, cgminer API, its alternate, Whatsminer tool).
MINER_PORTS = (4028, 80)

#: asic-rs data fields a reading asks for; the others are excluded (each costs requests).
KEEP_FIELDS = ("Wattage", "Hashrate", "IsMining", "TuningTarget")


class FamilyRefused(ControlRejected):
    """The miner answers, but this back-end does not drive its firmware; never retried."""

    retryable = False


def _ths(hashrate: Any) -> float | None:
    if hashrate is None:
        return None
    from pyasic_rs.asic_rs import HashRateUnit

    return float(hashrate.as_unit(HashRateUnit.TH).value)


def _target_w(tt: Any) -> float | None:
    """A tuning target's watts: a power target's, or a VNish preset's, named by its watts."""
    if tt.watts is not None:
        return float(tt.watts)
    name = tt.preset_name
    return float(name) if name is not None and name.isdigit() else None


def parse_rs_data(device_id: str, d: Any, at: float, family: Family) -> Telemetry:
    """pyasic-rs ``MinerData`` as Telemetry.

    asic-rs fills what it could not read with None and ``is_mining`` with False, so False
    is believed only beside a hashrate; a LuxOS miner is judged by its power (asic-rs
    reads no LuxOS hashrate and reports a curtailed one as mining)."""
    field = "wattage"  # the field being read, for the error
    try:
        watts = None if d.wattage is None else float(d.wattage)
        field = "hashrate"
        ths = _ths(d.hashrate)
        field = "tuning_target"
        tt = d.tuning_target
        target = None if tt is None else _target_w(tt)
        field = "is_mining"
        mining = bool(d.is_mining)
    except (AttributeError, TypeError, ValueError):
        raise BadReply(device_id, f"asic-rs data unusable: {field_words(d, field)}") from None
    if watts is None and ths is None:
        raise BadReply(device_id, "asic-rs read neither power nor hashrate")
    state: Literal["running", "sleeping", "transition", "unknown"]
    if ths is not None:
        if ths > 0:
            state = "running" if mining else "transition"
        else:
            state = "sleeping" if (watts or 0.0) <= SLEEPING_MAX_W else "transition"
    else:
        assert watts is not None
        if watts <= SLEEPING_MAX_W:
            state = "sleeping"
        elif family is not Family.LUXOS and not mining:
            state = "transition"
        elif target is not None and watts < RUNNING_SHARE * target:
            state = "transition"  # still ramping up to its target
        else:
            state = "running"
    return Telemetry(
        device_id=device_id, at=at, state=state, power_w=watts, target_w=target, hashrate_ths=ths
    )


@dataclass
class AsicRsMiner(AsicMiner):
    """One miner driven through pyasic-rs; ``address`` is its IP."""

    _exclude: list[Any] = field(default_factory=list, init=False, repr=False)

    async def _answers(self) -> int | None:
        """The first miner port that takes a connection, or None."""
        for port in MINER_PORTS:
            try:
                async with asyncio.timeout(self.timeout_s):
                    _r, writer = await asyncio.open_connection(self.address, port)
            except (OSError, TimeoutError):
                continue
            writer.close()
            return port
        return None

    async def _discover(self) -> Any:
        import pyasic_rs
        from pyasic_rs.asic_rs import DataField

        now = time.monotonic()
        if self._miner is not None and now - self._discovered_at < REDISCOVER_S:
            return self._miner
        ident_s = max(1, math.ceil(self.timeout_s * 2))
        factory = pyasic_rs.MinerFactory().with_identification_timeout_secs(ident_s)
        miner = await contain(
            self.device_id, "discovery", factory.get_miner(self.address), ident_s + self.timeout_s
        )
        if miner is None:
            port = await self._answers()
            if port is None:
                raise DeviceUnreachable(
                    self.device_id, f"no miner answers at {self.address} (ports 4028, 80)"
                )
            raise FamilyRefused(
                self.device_id,
                f"asic-rs did not identify the miner at {self.address}, which answers on port "
                f"{port} (VNish, Whatsminer on API v3, Braiins OS+ without its web GraphQL "
                f"API on port 80); {USE_PYASIC}",
            )
        if self.password is not None:
            miner.set_auth(self.username or "root", self.password.reveal())
        self._exclude = [
            getattr(DataField, n)
            for n in dir(DataField)
            if n[:1].isupper() and n not in KEEP_FIELDS
        ]
        self._miner, self._discovered_at = miner, now
        return miner

    async def connect(self) -> DeviceInfo:
        miner = await self._discover()
        make, firmware = str(miner.make or ""), str(miner.firmware or "")
        family = family_of_rs(firmware, make)
        why = refusal(family)
        if why is None and not (miner.supports_pause and miner.supports_resume):
            why = "asic-rs cannot pause and resume this miner"
        if why is not None:
            raise FamilyRefused(
                self.device_id, f"{firmware or 'unknown firmware'}: {why}; {USE_PYASIC}"
            )
        self._caps = capabilities(family)
        if self._caps.power_target is not PowerTarget.NONE and not miner.supports_set_power_limit:
            self._caps = dataclasses.replace(self._caps, power_target=PowerTarget.NONE)
        presets: tuple[float, ...] = ()
        if self._caps.power_target is PowerTarget.PRESETS:
            presets = await self._presets(miner)
            if not presets:
                self._caps = dataclasses.replace(self._caps, power_target=PowerTarget.NONE)
        version = self.info.firmware_version if self.info is not None else ""
        if not version:
            version = await self._version(miner.get_firmware_version())
        model = str(miner.model or "")
        self.info = self._identity(make, model, firmware, version, family, presets)
        return self.info

    async def _presets(self, miner: Any) -> tuple[float, ...]:
        """The watts of the tuned presets (VNish names them by their watts), ascending;
        an untuned one is not offered, as the pyasic adapter does not."""
        got = await contain(self.device_id, "presets", miner.get_presets(), self.timeout_s)
        try:
            watts = {
                float(p.name)
                for p in got
                if str(p.name).isdigit() and str(p.status or "").lower() == "tuned"
            }
        except (AttributeError, TypeError, ValueError):
            raise BadReply(self.device_id, f"presets answered {str(got)[:120]}") from None
        return tuple(sorted(watts))

    def unconfirmed(self, applied: Applied) -> None:
        self._forget()

    def _forget(self) -> None:
        self._target_w = self._sleeping = None

    async def read(self) -> Telemetry:
        miner = self._need()
        now = time.time()
        data = await contain(
            self.device_id, "telemetry", miner.get_data(exclude=self._exclude), self.timeout_s
        )
        try:
            t = parse_rs_data(self.device_id, data, now, family_of_rs(miner.firmware, miner.make))
        except BadReply as exc:
            if await self._answers() is None:
                raise DeviceUnreachable(
                    self.device_id, f"telemetry: no connection ({exc.reason})"
                ) from None
            raise
        self._believe(t, now)
        return t

    async def _call(self, what: str, call: Any) -> None:
        """Send one control call. asic-rs answers False, not an exception, for a refusal,
        for no connection (a port probe tells them apart), and on stock Antminer for a
        write its own read of the configuration does not show."""
        try:
            ok = await contain(self.device_id, what, call, self.timeout_s)
        except Exception:
            self._forget()
            raise
        if ok is not True:
            self._forget()
            if await self._answers() is None:
                raise DeviceUnreachable(self.device_id, f"{what}: no connection")
            raise ControlRejected(
                self.device_id,
                f"{what}: asic-rs answered that it did not take (a refusal, or on stock "
                "Antminer a configuration that reads back unchanged after the write)",
            )

    def _target(self, request: ModeRequest) -> tuple[float | None, str]:
        family = Family(self.info.family) if self.info and self.info.family else Family.OTHER
        why = NO_TARGET.get(family) or f"{family.value} firmware has no power target"
        if self._caps.power_target is not capabilities(family).power_target:
            why = f"{family.value} firmware has no power target here (no tuned preset)"
        has_target = self._caps.power_target is not PowerTarget.NONE
        presets = self.info.power_targets_w if self.info else ()
        return run_target(request.power_w, has_target, presets, why)

    async def apply(self, request: ModeRequest) -> Applied:
        miner = self._need()
        if request.action == "sleep":
            await self._call("sleep", miner.pause())
            self._sleeping, self._slept_at = True, time.time()
            return Applied(request, None)
        target, note = self._target(request)
        if target is not None and not self._target_in_place(target):
            await self._call("set power target", miner.set_power_limit(float(target)))
            self._target_w = target
        if self._sleeping is not False:
            await self._call("wake", miner.resume())
            self._sleeping, self._slept_at = False, None
        return Applied(request, target, note)
