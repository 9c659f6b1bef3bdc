"""A simulated Antminer on VNish (AnthillOS): its cgminer API on 4028, its web API on 80.

VNish is a third-party Antminer firmware; nothing of it is public but its behaviour as
clients see it. Every shape below is what pyasic (0.79) sends and parses for it, from
its source installed in the virtual environment:

- ``miners/factory.py``: discovery. ``GET /`` on 80 answers the web UI, whose text names
  "AnthillOS" (``_parse_web_type``); the socket probe (``version``) is parsed for
  "VNISH" after "ANTMINER", so the ``version`` reply here names VNish and not the model
  (a reply naming both would read as a stock Antminer when the socket answers first).
  The model comes from ``stats``: ``STATS[0].Type`` = "Antminer S19j Pro (Vnish 1.2.6)",
  cut at " (" (``get_miner_model_vnish``).
- ``miners/backends/vnish.py`` (``VNish``, a ``BMMiner``): hashrate from the RPC
  ``summary`` (``SUMMARY[0]["GHS 5s"]``), boards, fans and uptime from ``stats``
  (``STATS[1]``: ``chain_acn*``, ``temp*``, ``temp2_*``, ``fan*``, ``total_rateideal``),
  pools from ``pools``; power from the web ``summary`` (``miner.power_usage``), the
  power target from the web ``settings`` (``miner.overclock.preset``: a tuned preset's
  watts as a string, or "disabled" in manual overclock), mining from
  ``miner.miner_status.miner_state`` (not mining when "stopped", "shutting-down" or
  "failure"), errors from ``miner.chains[].status`` (state "failure"), the version from
  ``miner.miner_type`` after "(Vnish ". ``stop_mining`` posts ``mining/stop``,
  ``resume_mining`` ``mining/resume``, ``restart_backend`` ``mining/restart``, ``reboot``
  ``system/reboot``; each reads ``success`` from the answer (pyasic takes an empty JSON
  answer as success). ``set_power_limit`` reads ``settings``, ``autotune/presets`` and
  ``perf-summary`` (``MinerConfig.from_vnish``), picks the highest *tuned* preset at or
  below the watts, posts ``settings`` with ``{"miner": {"overclock": {..., "preset":
  "<watts>"}}}`` and reads ``settings`` back: the firmware answers
  ``{"restart_required": false, "reboot_required": false}`` whether it applied the preset
  or not (pyasic's comment in ``web/vnish.py``), so only the read-back tells.
- ``web/vnish.py`` (``VNishWebAPI``): ``POST /api/v1/unlock`` with ``{"pw": ...}``
  ("admin" by default, pyasic's setting ``default_vnish_web_password``) answers
  ``{"token": ...}``; every other call carries it as ``Authorization: <token>``, or
  ``Bearer <token>`` under ``system/``. A non-200 answer makes pyasic unlock again once
  and give up (``APIError``); an unlock refused leaves it without a token.
- ``config/mining/presets.py`` (``MiningPreset.from_vnish``): a preset is ``{"name":
  "3050", "pretty": "3050 watt ~ 100 TH", "status": "tuned", "modded_psu_required":
  false}``; ``get_config`` takes ``autotune/presets`` as a bare list or as
  ``{"presets": [...]}``, so firmware versions answer either (``presets_wrapped``).

What the firmware does with the commands is this simulator's physics
(:mod:`adapters.sim.physics`): ``mining/stop`` ramps the miner down ("shutting-down",
then "stopped" at the control board's draw), ``mining/resume``, ``mining/start`` and
``mining/restart`` boot and ramp it back ("starting", then "mining"), a preset change
retunes it. No source says whether ``mining/resume`` restarts a *stopped* miner (rather
than only ending a ``mining/pause``); pyasic pairs stop with resume, asic-rs
(``vnish/src/backends/v1_2_0``) with ``mining/start``. By default it does;
``resume_starts_stopped = False`` is the other firmware.

Writes are answered ``{}`` (pyasic reads an empty answer as success); ``command_answer``
puts another answer in its place (an error status, ``"success": false``, another body).

Refusals: a wrong password is refused at ``unlock`` (401), and a missing or stale token
on any call but the reads a VNish 1.2.6 API reference shows without one (``info``,
``model``, ``status``, ``perf-summary``, ``chains``: 401); either token form is taken;
a preset that is not tuned, or any preset in manual overclock, is answered as above and
not applied. Faults as the other simulators
(:class:`~adapters.sim.server.FaultKind`) on both ports: ``ignore`` (commands and
settings answered and not done), ``garble`` (JSON pyasic cannot use), ``slow-write``
(done ``delay_s`` after the answer), ``malformed``, ``hang``, ``slow``, ``refuse``,
``dropout``, ``reboot``. The HTTP side is in :mod:`adapters.sim.vnish_web`.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from dataclasses import dataclass, field
from typing import Any, ClassVar

from adapters.sim.bmminer import BMMINER_VERSION, BmminerSim
from adapters.sim.calllog import CallLog
from adapters.sim.physics import Preset
from adapters.sim.server import FaultKind
from adapters.sim.vnish_web import HttpReply, serve_http
from models import catalog

VNISH_VERSION = "1.2.6"


def vnish_presets(model: str) -> tuple[Preset, ...]:
    """The simulator's tuned presets for a catalog model: 70, 85, 100, 112 and 125 % of
    its nameplate power (the hashrate 80 to 112 %), ``default`` at the nameplate and the
    others named by their watts (``2592W``), as VNish names a preset by its watts."""
    spec = catalog.find_asic(model)
    steps = (
        (0.70, 0.80, -100),
        (0.85, 0.90, -50),
        (1.0, 1.0, 0),
        (1.12, 1.06, 25),
        (1.25, 1.12, 50),
    )
    out = []
    for pf, hf, df in steps:
        watts = round(spec.power_w * pf)
        out.append(
            Preset(
                name="default" if df == 0 else f"{watts}W",
                watts=watts,
                ths=round(spec.hashrate_ths * hf, 2),
                frequency_mhz=525 + df,  # the chains' frequency VNish reports
                voltage=round(13.8 * math.sqrt(pf), 2),
            )
        )
    return tuple(out)


@dataclass
class VnishSim(BmminerSim):
    """One simulated VNish miner on ``host``:4028 (API) and ``host``:``web_port`` (web)."""

    web_port: int = 80
    password: str = "admin"
    version: str = VNISH_VERSION
    #: ``autotune/presets`` answered as ``{"presets": [...]}`` (True) or a bare list.
    presets_wrapped: bool = False
    #: Manual overclock: ``overclock.preset`` is "disabled"; presets are not applied.
    manual_overclock: bool = False
    #: A token stops working this long after its unlock (inf: while the miner runs).
    token_ttl_s: float = math.inf
    #: The firmware's answer to ``mining/*`` and ``settings`` writes in place of its own:
    #: (HTTP status, JSON body). The write is done only on a 200 that does not say
    #: ``"success": false``. How VNish words a refusal is not public; asic-rs
    #: (``vnish/src/backends/v1_2_0/web.rs``) takes any status outside 2xx as an error.
    command_answer: tuple[int, Any] | None = None
    #: False: ``mining/resume`` only ends a ``mining/pause`` and leaves a miner stopped by
    #: ``mining/stop`` stopped; ``mining/start`` starts it. No source says which VNish
    #: does: pyasic pairs stop with resume, asic-rs (``vnish/src/backends/v1_2_0``) with
    #: start.
    resume_starts_stopped: bool = True
    web_calls: CallLog[tuple[str, str]] = field(default_factory=CallLog)  # (method, path)

    # bmminer's API (pyasic's VNish class extends BMMiner): four fans, turning while the
    # chains are idle; pyasic reads temp<i> as the chip's
    stats_fans: ClassVar[int] = 4
    idle_fan_rpm: ClassVar[int] = 1200
    temp_offsets_c: ClassVar[tuple[int, int]] = (6, -6)

    def __post_init__(self) -> None:
        if not self.presets:
            # VNish names a preset by its watts; the physics needs a "default" too.
            self.presets = vnish_presets(self.model)
        super().__post_init__()
        self._web: asyncio.AbstractServer | None = None
        self._tokens: dict[str, float] = {}  # token -> when it stops working (monotonic)
        self.untuned_w = round(self.preset("default").watts * 1.4)  # listed, never tuned
        #: The preset the settings hold: written at once, while the miner retunes to it
        #: (``delay_s`` later under a ``slow-write`` fault).
        self.conf_preset = self.preset_name()

    # -- serving: the web API beside the cgminer API, following the same faults ---------

    async def _open_more(self) -> None:
        self._web = await asyncio.start_server(
            lambda r, w: serve_http(self, r, w), self.host, self.web_port, reuse_address=True
        )

    def _close_more(self) -> None:
        if self._web is not None:
            self._web.close()
            self._web = None
        self._tokens.clear()  # sessions live in the web server's memory

    @property
    def web_listening(self) -> bool:
        return self._web is not None

    # -- what the miner is doing, in VNish's words ---------------------------------------

    def miner_state(self) -> str:
        """VNish's word for what the miner does; mining again once the chains hash."""
        _w, ths = self._advance()
        phase, ramp = self.state.phase, self.state.ramp
        if phase == "sleeping":
            return "shutting-down" if ramp is not None else "stopped"
        if phase == "rebooting" or (phase == "waking" and ths <= 0):
            return "starting"
        return "mining"

    def preset_name(self) -> str:
        """The active preset as VNish names it: its watts."""
        return str(round(self.preset(self.state.profile).watts))

    def _by_watts(self, name: str) -> Preset | None:
        return next((p for p in self.presets if str(round(p.watts)) == name), None)

    # -- the cgminer API on 4028 (summary, stats, pools: adapters.sim.bmminer) ----------

    def _model_type(self) -> str:
        return f"{self.model} (Vnish {self.version})"

    def _cmd_version(self, _: list[str]) -> dict[str, Any]:
        body = {
            "BMMiner": BMMINER_VERSION,
            "API": "3.1",
            "Miner": f"Vnish {self.version}",
            "CompileTime": "Tue Apr 15 10:21:02 UTC 2025",
        }
        return self._ok(22, "BMMiner versions", "VERSION", [body])

    def _stats_head(self) -> dict[str, Any]:
        return {
            "BMMiner": BMMINER_VERSION,
            "Miner": f"Vnish {self.version}",
            "Type": self._model_type(),
        }

    # -- the web API: authentication -----------------------------------------------------

    def unlock(self, body: Any) -> HttpReply:
        pw = body.get("pw") if isinstance(body, dict) else None
        if pw != self.password:
            return HttpReply(401, {"err": "Unauthorized"})
        token = secrets.token_hex(16)
        self._tokens[token] = self.clock() + self.token_ttl_s
        return HttpReply(200, {"token": token})

    def authorised(self, path: str, header: str | None) -> bool:
        """Whether the ``Authorization`` header carries a live token: the bare token (as
        pyasic's ``send_command`` sends it outside ``system/``) or ``Bearer <token>`` (as
        pyasic sends it under ``system/``, asic-rs everywhere, and a VNish 1.2.6 API
        reference shows it for ``summary`` and ``autotune/presets``)."""
        if header is None:
            return False
        token = header.removeprefix("Bearer ")
        if path.startswith("system/") and token == header:
            return False
        until = self._tokens.get(token)
        return until is not None and self.clock() < until

    # -- the web API: reads ----------------------------------------------------------------

    def web_get(self, path: str) -> Any:
        """The answer to ``GET /api/v1/<path>``; None: no such endpoint."""
        handler = {
            "info": self._info,
            "summary": self._summary,
            "status": self._status_web,
            "settings": self._settings,
            "perf-summary": self._perf_summary,
            "autotune/presets": self._presets_reply,
        }.get(path)
        return None if handler is None else handler()

    def _network(self) -> dict[str, Any]:
        return {"mac": self._mac, "hostname": "antminer-vnish", "ip": self.host, "dhcp": True}

    def _info(self) -> dict[str, Any]:
        return {
            "miner": self.model,
            "model": self.model.lower().replace("antminer ", "").replace(" ", ""),
            "fw_name": "Vnish",
            "fw_version": self.version,
            "algorithm": "sha256d",
            "hr_measure": "GH/s",
            "serial": "SIM" + self._mac.replace(":", "")[-8:],
            "system": {"network_status": self._network()},
        }

    def _summary(self) -> dict[str, Any]:
        w, ths = self._advance()
        state = self.miner_state()
        p = self.preset(self.state.profile)
        t = self.state.temp_c
        chains = [
            {
                "id": i,
                "hashrate_rt": round(ths * 1000.0 / 3, 2),
                "chip_temp": {"min": round(t), "max": round(t + 6)},
                "pcb_temp": {"min": round(t - 8), "max": round(t - 6)},
                "status": {"state": "mining" if ths > 0 else "stopped", "description": ""},
            }
            for i in range(3)
        ]
        return {
            "miner": {
                "miner_type": self._model_type(),
                "miner_status": {
                    "miner_state": state,
                    "miner_state_time": int(self.clock() - self.state.boot_at),
                },
                "hr_realtime": round(ths * 1000.0, 2),
                "hr_nominal": round(p.ths * 1000.0, 2),
                "power_usage": round(w),
                "power_consumption": round(w),  # both, as a VNish 1.2.6 API reference shows
                "chip_temp": {"min": round(t), "max": round(t + 6)},
                "chains": chains,
            },
            "system": {"network_status": self._network(), "uptime": "1 day"},
        }

    def _status_web(self) -> dict[str, Any]:
        return {"miner_state": self.miner_state(), "unlocked": True, "restart_required": False}

    def _overclock(self) -> dict[str, Any]:
        if self.manual_overclock:
            p = self.preset(self.state.profile)
            chains = [{"freq": p.frequency_mhz, "chips": []} for _ in range(3)]
            return {"preset": "disabled", "globals": {"volt": 1380, "freq": 525}, "chains": chains}
        return {"preset": self.conf_preset, "globals": {"volt": 0, "freq": 0}}

    def _settings(self) -> dict[str, Any]:
        return {
            "miner": {
                "overclock": self._overclock(),
                "cooling": {"mode": {"name": "auto", "param": 65}, "fan_min_count": 4},
                "pools": [
                    {"url": "127.0.0.1:3333", "user": "gridsched.sim", "pass": "x"},
                    {"url": "", "user": "", "pass": ""},
                    {"url": "", "user": "", "pass": ""},
                ],
            },
            "misc": {"restart_temp": 95},
        }

    def _preset_rows(self) -> list[dict[str, Any]]:
        rows = [
            {
                "name": str(round(p.watts)),
                "pretty": f"{round(p.watts)} watt ~ {round(p.ths)} TH",
                "status": "tuned",
                "modded_psu_required": False,
            }
            for p in sorted(self.presets, key=lambda p: p.watts)
        ]
        ths = round(self.preset("default").ths * 1.25)
        rows.append(
            {
                "name": str(self.untuned_w),
                "pretty": f"{self.untuned_w} watt ~ {ths} TH",
                "status": "untuned",
                "modded_psu_required": True,
            }
        )
        return rows

    def _presets_reply(self) -> Any:
        rows = self._preset_rows()
        return {"presets": rows} if self.presets_wrapped else rows

    def _perf_summary(self) -> dict[str, Any]:
        if self.manual_overclock:
            return {"preset_switcher": {"enabled": False}}
        current = next(r for r in self._preset_rows() if r["name"] == self.conf_preset)
        return {"preset_switcher": {"enabled": False}, "current_preset": current}

    # -- the web API: commands -------------------------------------------------------------

    def web_post(self, path: str, body: Any) -> Any:
        """The answer to ``POST /api/v1/<path>`` (an HttpReply where not a plain 200); None:
        no such endpoint."""
        action = {
            "mining/stop": self.sleep,
            "mining/pause": self.sleep,
            "mining/start": self.wake,
            "mining/resume": self._resume,
            "mining/restart": self._restart_mining,
            "system/reboot": self._reboot_soon,
            "find-miner": None,
        }
        if path != "settings" and path not in action:
            return None
        answer = self.command_answer
        if answer is not None and not self._answer_does(answer):
            return HttpReply(*answer)  # refused: answered, not done
        if path == "settings":
            got: Any = self._post_settings(body)
        else:
            fn = action[path]
            if fn is not None and self._fault(FaultKind.IGNORE) is None:
                self._later(fn)
            got = {}  # pyasic reads an empty answer as {"success": True}
        return got if answer is None else HttpReply(*answer)

    def _resume(self) -> None:
        stopped = self.state.phase == "sleeping"
        if self.resume_starts_stopped or not stopped:
            self.wake()

    @staticmethod
    def _answer_does(answer: tuple[int, Any]) -> bool:
        status, body = answer
        return status == 200 and not (isinstance(body, dict) and body.get("success") is False)

    def _post_settings(self, body: Any) -> dict[str, Any]:
        reply = {"restart_required": False, "reboot_required": False}
        try:
            name = str(body["miner"]["overclock"]["preset"])
        except (KeyError, TypeError):
            return reply  # nothing this simulator models (pools, cooling): kept as they are
        target = self._by_watts(name)
        if target is None or self.manual_overclock or self._fault(FaultKind.IGNORE):
            return reply  # not a tuned preset, or manual overclock: answered, not applied
        self.conf_preset = name
        self._later(lambda: self.set_profile(target.name))
        return reply
