"""A simulated Antminer on stock Bitmain firmware: bmminer's API on 4028, the web CGI on 80.

What a stock S19/S21 serves, as far as pyasic (0.79) reads and writes it; every shape
below is the one pyasic's ``miners/backends/antminer.py`` (``AntminerModern``),
``web/antminer.py`` (``AntminerModernWebAPI``) and ``miners/factory.py`` parse:

- **cgminer API on 4028** (bmminer): ``version`` (``VERSION[0].Type`` names the model,
  ``CompileTime`` the firmware build; discovery looks for "ANTMINER" in the reply),
  ``summary`` (``SUMMARY[0]["GHS 5s"]``), ``stats`` (``STATS[1].total_rateideal``,
  ``chain_acn*``, ``temp*``), ``pools``, ``devs``. A ``+`` multicommand is refused, as
  pyasic's base RPC notes for the S19 (it then sends the commands one by one).
- **Web CGI on 80** behind HTTP digest auth (realm ``antMiner Configuration``, root/root
  by default): an unauthenticated request gets 401 with that realm, which is how
  pyasic's discovery tells a stock Antminer. The digest is checked as lighttpd's mod_auth
  checks it (lighttpd1.4 ``src/mod_auth.c``: ``mod_auth_digest_validate_params``,
  ``mod_auth_digest_validate_nonce``, ``mod_auth_digest_www_authenticate``): the nonce is
  the hex time of its issue, ``:``, and random hex; any well-formed nonce is accepted for
  ``nonce_ttl_s`` (600 s) from that time, as often as a client likes and whatever its
  ``nc`` (lighttpd keeps no record of nonces or counts); an older one, or one from the
  future, is answered 401 with a fresh challenge carrying ``stale=true``; a realm or
  password that does not match gets a fresh challenge without it; a ``uri`` other than
  the request's is 400. ``get_system_info.cgi`` (``minertype``),
  ``get_miner_conf.cgi`` (``bitmain-work-mode``: "0" normal, "1" sleep, "3" low power),
  ``set_miner_conf.cgi`` (a JSON body with ``miner-mode``: 0 normal, 1 sleep; answered
  ``{"stats": "success", "code": "M000"}``), ``summary.cgi`` (``SUMMARY[0].status``),
  ``stats.cgi`` (``STATS[0].chain[]``; ``miner-mode``, as asic-rs issue 245 reads it),
  ``miner_type.cgi``, ``get_blink_status.cgi``, ``reboot.cgi`` (a GET, as pyasic's
  ``AntminerModernWebAPI.reboot`` sends it: the miner reboots with its saved work mode).
  Anything else is 404.
- **No power target** and no power reading: stock firmware exposes neither through
  pyasic (``set_power_limit`` is the base class's ``return False``; ``AntminerModern``
  has no wattage data location).

Besides the LuxOS simulator's transport faults (:class:`~adapters.sim.server.FaultKind`),
three faults of the firmware itself: ``ignore`` (``set_miner_conf`` answers success and
changes nothing), ``garble`` (valid JSON in a shape pyasic cannot parse), and
``slow-write`` (the write is answered at once and takes effect ``delay_s`` later: the
issue asks for 20-35 s; a real S19j Pro build answered its write after about 21 s,
asic-rs issue 245). ``conf_answer_s``
delays the answer to ``set_miner_conf`` instead (a CGI that restarts bmminer before it
answers), the change taking effect when it answers.

Build variants (fields of :class:`~adapters.sim.antminer_web.AntminerWeb`): ``mode_type``
and ``mode_key`` (which JSON type and key of the write a build applies, the other answered
M000 and ignored), and ``sleep_applies_on_reboot`` (the sleep is saved and read back, the
boards hash on until a reboot: asic-rs issue 245).

The web CGI and its digest check are :class:`~adapters.sim.antminer_web.AntminerWeb`
(lighttpd's connection handling: :mod:`adapters.sim.lighttpd`); bmminer's API on 4028 is
:class:`~adapters.sim.bmminer.BmminerSim`, to which this module adds stock firmware's
``version``, ``devs`` and ``stats`` head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from adapters.sim.antminer_web import COMPILE_TIME, AntminerWeb
from adapters.sim.bmminer import BMMINER_VERSION, BmminerSim


@dataclass
class AntminerSim(AntminerWeb, BmminerSim):
    """One simulated stock Antminer bound to ``host``:4028 (API) and ``host``:``web_port``."""

    bad_json_code: ClassVar[int] = 23

    # -- the cgminer API on 4028 (summary, stats, pools: adapters.sim.bmminer) ----------

    def _cmd_version(self, _: list[str]) -> dict[str, Any]:
        body = {
            "BMMiner": BMMINER_VERSION,
            "API": "3.1",
            "Miner": "uart_trans.1.3",
            "CompileTime": COMPILE_TIME,
            "Type": self.model,
        }
        return self._ok(22, "BMMiner versions", "VERSION", [body])

    def _stats_head(self) -> dict[str, Any]:
        return {"BMMiner": BMMINER_VERSION, "Miner": "uart_trans.1.3", "Type": self.model}

    def _cmd_devs(self, _: list[str]) -> dict[str, Any]:
        _w, ths = self._advance()
        body = [
            {"ASC": i, "Name": "BTM_SOC0", "ID": i, "Enabled": "Y", "MHS 5s": ths * 1e6 / 3}
            for i in range(3)
        ]
        return self._ok(9, "3 ASC(s)", "DEVS", body)
