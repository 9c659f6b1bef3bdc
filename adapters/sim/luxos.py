"""The LuxOS command table: what a LuxOS miner answers on its cgminer-style API (4028).

Sources: Luxor's LuxOS API documentation (docs.luxor.tech, "Sessions" and each command's
page), Luxor's own client (github.com/LuxorLabs/luxos-tooling, ``asyncops.logon``), and
what pyasic (0.79) sends and parses for a LuxOS miner (``rpc/luxminer.py``,
``miners/backends/luxminer.py``): ``VERSION[0].Type`` and the ``LUXminer`` key for
discovery; ``POWER``, ``SUMMARY``, ``STATS``, ``PROFILES``, ``CONFIG``, ``FANS``,
``TEMPS``, ``POOLS``, ``GROUPS``, ``TEMPCTRL``, ``ATM``, so that ``pyasic.get_miner(ip)``
identifies it and its control calls work.

Commands joined by ``+`` are a multicommand, answered as ``{"summary": [{...}], "power":
[{...}], "id": 1}``. Privileged commands (``curtail``, ``profileset``, ``atmset``,
``logoff``) take the session id from ``logon`` as their first parameter. There is one
session at a time: ``logon`` is refused while it is active, ``session`` names it, and it
ends when unused for ``session_ttl_s`` (about a minute on LuxOS) or at ``logoff``.

The profiles are LuxOS's 25 built-in ones, ``default`` and 24 named by frequency
(:func:`adapters.sim.physics.presets_for`); ``profileset`` selects one by name, by estimated
power or hashrate or by position from ``default`` (:mod:`adapters.sim.luxos_profiles`) and
answers Code 321 "Profile Set" as Luxor's page shows; ``atm`` names its bounds likewise.
ATM itself (the profile stepped on temperature; ``profileset`` refused while it is on, or
accepted, ``atm_profileset``) is :mod:`adapters.sim.luxos_atm`'s, with its sources.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from adapters.sim import luxos_atm, luxos_profiles
from adapters.sim.server import FaultKind, MinerServer

LUXOS_VERSION = "2024.11.14.190207-2c9c8ec"
#: ``atmset``'s numeric keys (Luxor, atmset): the attribute each sets, and its unit in s/C.
_ATM_NUMBERS = {
    "startup_minutes": ("atm_startup_s", 60.0),
    "post_ramp_minutes": ("atm_post_ramp_s", 60.0),
    "temp_window": ("atm_temp_window_c", 1.0),
}


def _minutes(seconds: float) -> int | float:
    """Seconds as ``atm`` shows minutes: whole where they are."""
    m = seconds / 60.0
    return int(m) if m.is_integer() else m


API_VERSION = "3.7"


@dataclass
class LuxosSim(MinerServer):
    """One simulated LuxOS miner bound to ``host:port``."""

    #: LuxOS ends a session unused this long ("Sessions expire automatically after one
    #: minute. This period is refreshed every time you use the session": Luxor's API
    #: docs, sessions); inf: never (a test's choice, kinder than the firmware).
    session_ttl_s: float = 60.0
    #: A curtailed (sleeping) rig stays asleep across a restart, as Luxor's curtail page
    #: says today ("the curtailment state will persist if you restart the machine"); False:
    #: the earlier firmware its older text describes ("can only be started again by
    #: wakeup or rebooting the machine"), where a reboot wakes it.
    curtail_survives_reboot: bool = True
    #: ``profileset`` while ATM is on: "refuse" (the harsher; undocumented, see
    #: :mod:`adapters.sim.luxos_atm`) or "accept".
    atm_profileset: str = "refuse"
    #: ATM's settings (``atmset``; the defaults ``atm`` shows): the least wait after a boot
    #: and after a ramp, and the band below Hot in which it steps down.
    atm_startup_s: float = 900.0
    atm_post_ramp_s: float = 900.0
    atm_temp_window_c: float = 5.0
    #: The Hot temperature (``tempctrl``), against which ATM steps.
    hot_c: float = 90.0
    #: ATM's state kept across a reboot: ``atmset`` changes persist while autosave is on
    #: (Luxor, atmset); False: the older behaviour here, a reboot turns it off.
    atm_survives_reboot: bool = True

    description: ClassVar[str] = f"LUXminer {LUXOS_VERSION}"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._session = ""
        self._session_used = 0.0  # clock time the session was created or last used
        self.atm = False
        # ATM's bounds (atmset min_profile / max_profile): profile names, "" unbounded
        self.atm_min = ""
        self.atm_max = "default"
        self._curtailed = False  # asleep when the power went: kept across the reboot
        self._atm_since = self.clock()  # the last boot or ramp, from which ATM waits
        self._atm_after_boot = True  # that was a boot (StartupMinutes), not a ramp

    def _power_off(self) -> None:
        self._curtailed = self.state.phase == "sleeping"
        super()._power_off()
        self._session = ""  # a reboot ends the session
        self.atm = self.atm and self.atm_survives_reboot

    def _boot(self) -> None:
        super()._boot()
        self._atm_since, self._atm_after_boot = self.clock(), True

    def set_profile(self, name: str) -> None:  # a ramp (and a wake, below): ATM waits
        super().set_profile(name)
        self._atm_since, self._atm_after_boot = self.clock(), False

    def wake(self) -> None:
        super().wake()
        self._atm_since, self._atm_after_boot = self.clock(), False

    def _one(self, command: str, params: list[str]) -> dict[str, Any]:
        self._atm_step()
        return super()._one(command, params)

    def _atm_step(self) -> None:
        """ATM's step due by now, if any (:func:`luxos_atm.next_profile`): only while it is
        on and the miner mines, settled, its wait since the last boot or ramp over."""
        if not self.atm:
            return
        self._advance()  # a wake or ramp ended since is seen ended
        wait_s = self.atm_startup_s if self._atm_after_boot else self.atm_post_ramp_s
        if self.state.phase != "mining" or self.state.ramp is not None:
            return
        if self.clock() - self._atm_since < wait_s:
            return
        names = [p.name for p in self.presets]
        hottest = self.state.temp_c  # the boards' temperature, as ``temps`` reports it
        step = luxos_atm.next_profile(
            names,
            self.state.profile,
            hottest,
            self.hot_c,
            self.atm_temp_window_c,
            self.atm_min,
            self.atm_max,
        )
        if step is not None:
            self.set_profile(step)

    def boots_asleep(self) -> bool:
        return self.curtail_survives_reboot and self._curtailed

    # -- the command table ------------------------------------------------------------------

    def _unknown(self, command: str) -> dict[str, Any]:
        return self._status("E", 14, f"Invalid command: {command}")

    def _privileged(self, params: list[str]) -> dict[str, Any] | None:
        self._expire_session()
        if not params or not self._session or params[0] != self._session:
            return self._status("E", 400, "Invalid session id")
        self._session_used = self.clock()  # a use refreshes the session
        return None

    def _cmd_version(self, _: list[str]) -> dict[str, Any]:
        body = {
            "API": API_VERSION,
            "LUXminer": LUXOS_VERSION,
            "Miner": LUXOS_VERSION,
            "Type": self.model,
        }
        return self._ok(22, "LUXminer versions", "VERSION", [body])

    def _cmd_devdetails(self, _: list[str]) -> dict[str, Any]:
        body = [
            {"DEVDETAILS": i, "Name": "BC", "ID": i, "Driver": "LUXminer", "Model": self.model}
            for i in range(3)
        ]
        return self._ok(69, "Device Details", "DEVDETAILS", body)

    def _cmd_summary(self, _: list[str]) -> dict[str, Any]:
        _w, ths = self._advance()
        self.state.accepted += 1 if ths > 0 else 0
        elapsed = int(self.clock() - self.state.boot_at)
        body = {
            "Elapsed": elapsed,
            "GHS 5s": round(ths * 1000.0, 2),
            "GHS av": round(ths * 1000.0, 2),
            "Accepted": self.state.accepted,
            "Rejected": 0,
            "Hardware Errors": 0,
        }
        return self._ok(11, "Summary", "SUMMARY", [body])

    def _cmd_power(self, _: list[str]) -> dict[str, Any]:
        w, _ths = self._advance()
        return self._ok(338, "Power", "POWER", [{"PSU": True, "Watts": round(w)}])

    def _cmd_stats(self, _: list[str]) -> dict[str, Any]:
        _w, ths = self._advance()
        t = self.state.temp_c
        p = self.preset(self.state.profile)
        board: dict[str, Any] = {
            "STATS": 1,
            "ID": "BC0",
            "Elapsed": int(self.clock() - self.state.boot_at),
            "total_rateideal": round(p.ths * 1000.0, 2),
            "rate_unit": "GH",
        }
        # The three chains run alike here: their figures are made once (the simulator
        # shares the host's CPU with the controller it serves).
        rate = f"{ths * 1000.0 / 3:.2f}"
        chips = f"{round(t + 4)}-{round(t + 6)}-{round(t + 8)}-{round(t + 5)}"
        pcb = f"{round(t - 8)}-{round(t - 6)}-{round(t - 5)}-{round(t - 7)}"
        for i in (1, 2, 3):
            board[f"chain_rate{i}"] = rate
            board[f"chain_acn{i}"] = 126
            board[f"temp_chip{i}"] = chips
            board[f"temp_pcb{i}"] = pcb
        head = {"STATS": 0, "ID": "LUXminer", "Type": self.model}
        return self._ok(70, "LUXminer stats", "STATS", [head, board])

    def _cmd_profiles(self, _: list[str]) -> dict[str, Any]:
        # The fields pyasic reads (MiningPreset.from_luxos) and the adapter (Watts, Profile
        # Name); Step: the position from default, counted as atm's MaxProfileStep is.
        names = [p.name for p in self.presets]
        base = names.index("default") if "default" in names else 0
        body = [
            {
                "Profile Name": p.name,
                "Watts": int(p.watts),
                "Hashrate": p.ths,
                "Frequency": p.frequency_mhz,
                "Voltage": p.voltage,
                "IsTuned": False,
                "Step": str(i - base),
            }
            for i, p in enumerate(self.presets)
        ]
        return self._ok(326, "Profiles", "PROFILES", body)

    def _cmd_config(self, _: list[str]) -> dict[str, Any]:
        body = {
            "Profile": self.state.profile,
            "MACAddr": self._mac,
            "RedLed": "off",
            "IsAtmEnabled": self.atm,
            "IsPowerTargetSupported": False,
            "Model": self.model,
        }
        return self._ok(33, "Configuration", "CONFIG", [body])

    def _cmd_fans(self, _: list[str]) -> dict[str, Any]:
        w, _ths = self._advance()
        rpm = int(1500 + 4000 * min(1.0, w / 4000.0))
        body = [{"FAN": i, "ID": i, "RPM": rpm, "Speed": int(rpm / 60)} for i in range(4)]
        out = self._ok(202, "Fans", "FANS", body)
        out["FANCTRL"] = [{"MinFans": 4}]
        return out

    def _cmd_temps(self, _: list[str]) -> dict[str, Any]:
        t = self.state.temp_c
        body = [
            {"TEMPS": i, "ID": i, "Board": round(t, 1), "Chip": round(t + 6, 1)} for i in range(3)
        ]
        return self._ok(201, "Temps", "TEMPS", body)

    def _cmd_tempctrl(self, _: list[str]) -> dict[str, Any]:
        body = {"Mode": "Auto", "Target": 75, "Hot": self.hot_c, "Dangerous": 100}
        return self._ok(200, "Temperature control", "TEMPCTRL", [body])

    def _cmd_pools(self, _: list[str]) -> dict[str, Any]:
        return self._ok(7, "Pools", "POOLS", [{**self._pool(), "GROUP": 0}])

    def _cmd_groups(self, _: list[str]) -> dict[str, Any]:
        return self._ok(8, "Groups", "GROUPS", [{"GROUP": 0, "Name": "Default", "Quota": 1}])

    def _cmd_atm(self, _: list[str]) -> dict[str, Any]:
        # Fields and defaults as Luxor's docs show them (atm): bounds by profile name, their
        # steps from default as text, "" where unbounded.
        def step(name: str) -> str:
            k = luxos_profiles.step_of(self.presets, name)
            return "" if k is None else str(k)

        body = {
            "Enabled": self.atm,
            "MaxProfile": self.atm_max,
            "MaxProfileStep": step(self.atm_max),
            "MinProfile": self.atm_min,
            "MinProfileStep": step(self.atm_min),
            "PostRampMinutes": _minutes(self.atm_post_ramp_s),
            "StartupMinutes": _minutes(self.atm_startup_s),
            "TempWindow": float(self.atm_temp_window_c),
        }
        return self._ok(339, "ATM configuration values", "ATM", [body])

    def _expire_session(self) -> None:
        if self._session and self.clock() - self._session_used > self.session_ttl_s:
            self._session = ""

    def _cmd_session(self, _: list[str]) -> dict[str, Any]:
        self._expire_session()
        # Luxor's API docs (luxminer/session): Code 319, "Session information"
        return self._ok(319, "Session information", "SESSION", [{"SessionID": self._session}])

    def _cmd_logon(self, _: list[str]) -> dict[str, Any]:
        self._expire_session()
        if self._session:
            # One session at a time: refused, and its id not handed out (Luxor's client,
            # luxos-tooling asyncops.logon: Code 402 "Another session is active").
            return self._status("E", 402, "Another session is active")
        self._session = secrets.token_hex(4)
        self._session_used = self.clock()
        # Code and message as LuxOS's docs show them (logon; "Sessions").
        return self._ok(316, "Session created", "SESSION", [{"SessionID": self._session}])

    def _cmd_logoff(self, params: list[str]) -> dict[str, Any]:
        err = self._privileged(params)
        if err is not None:
            return err
        self._session = ""
        return self._status("S", 38, "Session closed")

    def _cmd_curtail(self, params: list[str]) -> dict[str, Any]:
        err = self._privileged(params)
        if err is not None:
            return err
        action = params[1] if len(params) > 1 else ""
        self.last_curtail = (action, time.time())
        if self._fault(FaultKind.IGNORE) is not None and action in ("sleep", "wakeup"):
            pass  # answered as done below, nothing changes
        elif action == "sleep":
            self.sleep()
        elif action == "wakeup":
            self.wake()
        else:
            return self._status("E", 45, f"Invalid curtail mode {action!r}: sleep or wakeup")
        # Code, message and field as LuxOS's docs show them (curtail).
        said = "sleep mode" if action == "sleep" else "wake up"
        return self._ok(335, "Curtailment command sent", "CURTAIL", [{"Action": said}])

    def _cmd_profileset(self, params: list[str]) -> dict[str, Any]:
        err = self._privileged(params)
        if err is not None:
            return err
        # A second parameter reading as 0-3 is the legacy board id; the profile follows
        # it and still applies to every board (Luxor's docs, profileset).
        board = 0
        args = params[1:]
        if args and args[0] in luxos_profiles.BOARD_IDS:
            board = int(args[0])
            args = args[1:]
        name = args[0] if args else ""
        if self.atm and self.atm_profileset == "refuse":
            return self._status("E", luxos_atm.REFUSED_CODE, luxos_atm.REFUSED_MSG)
        chosen = luxos_profiles.resolve(self.presets, name)
        if chosen is None:
            # Not in Luxor's docs as read: this simulator's own code and words.
            valid = ", ".join(p.name for p in self.presets)
            return self._status("E", 327, f"Invalid profile {name!r}; valid: {valid}")
        if self._fault(FaultKind.IGNORE) is None:
            self.set_profile(chosen.name)
        # else: answered as set, nothing changes
        # Code, message and fields as Luxor's docs show them (profileset): the profile set,
        # and the frequency and voltage steps it is applied in (the example's 5 and 0.05).
        row = {"Board": board, "FrequencyStep": 5, "Profile": chosen.name, "VoltageStep": 0.05}
        return self._ok(321, "Profile Set", "PROFILE", [row])

    def _cmd_atmset(self, params: list[str]) -> dict[str, Any]:
        err = self._privileged(params)
        if err is not None:
            return err
        bounds: dict[str, str] = {}
        numbers: dict[str, float] = {}
        enabled, prevent_oc = self.atm, False
        for p in params[1:]:
            key, _, value = p.partition("=")
            if key == "enabled":
                enabled = value == "true"
            elif key in ("min_profile", "max_profile"):
                # A name or a relative position; min_profile may be "" (unbounded).
                got = luxos_profiles.resolve_position(self.presets, value)
                if got is None and not (key == "min_profile" and value == ""):
                    # Luxor's docs say an invalid value is an error, not its code: ours.
                    return self._status("E", 327, f"Invalid profile {value!r} for {key}")
                bounds[key] = got.name if got is not None else ""
            elif key in _ATM_NUMBERS:
                try:
                    number = float(value)
                except ValueError:
                    number = -1.0
                if not number >= 0:  # an error as Luxor says; its code and words ours
                    return self._status("E", 327, f"Invalid value {value!r} for {key}")
                numbers[_ATM_NUMBERS[key][0]] = number * _ATM_NUMBERS[key][1]
            elif key == "prevent_oc":
                prevent_oc = value == "true"
        if self.atm and not enabled and prevent_oc:  # turning ATM off: back to default
            step = luxos_profiles.step_of(self.presets, self.state.profile)
            if step is not None and step > 0:
                self.set_profile("default")
        self.atm = enabled  # all of it or, on an error, none
        self.atm_min = bounds.get("min_profile", self.atm_min)
        self.atm_max = bounds.get("max_profile", self.atm_max)
        for attr, number in numbers.items():
            setattr(self, attr, number)
        return self._status("S", 340, "Advanced Thermal Management configuration updated")
