"""Stock Antminer builds that take a sleep into their configuration and hash on until a reboot.

asic-rs issue 245 (an S19j Pro, firmware of Dec 26 2022): ``{"miner-mode": 1}`` was answered
M000, ``get_miner_conf.cgi`` and ``stats.cgi`` both read sleep afterwards, the hashrate did
not drop within 60 s, and a reboot was still needed. (asic-rs issue 310, an S21+ of Feb
2025, and hass-miner issue 424, an S19 of Dec 2022, report a sleep with no effect at all,
not read back as sleep either: the read-back calls those unconfirmed already, and neither
says that a reboot applied it, so nothing here is done for them.)

Such a miner reads configured asleep and hashing (state "transition",
:func:`adapters.payloads.asic_state`), never asleep: the read-back leaves its sleep
unconfirmed, and says why in words (:meth:`SleepReboot.words`). With the site's
``reboot_if_sleep_ignored`` (off by default: a reboot stops the miner for minutes), the sleep
re-sent after that verdict is a reboot instead of a write (``reboot.cgi``, as pyasic's
``AntminerModernWebAPI.reboot`` sends it): the build boots with the work mode it saved,
asleep, and the read-back confirms it. At most one reboot per sleep: a sleep re-sent after
it is written, as without the setting; a wake cancels a reboot that was due, and the next
sleep may have its own. A reboot follows only a sleep we sent, and only while the latest
reading, made after it, still shows the configuration asleep and the boards hashing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from adapters import antminer
from adapters.base import ControlRejected, DeviceTimeout, contain

log = logging.getLogger("gridsched.fleet")

#: The ``[devices.adapter]`` setting that allows the reboot (models.device_adapter).
SETTING = "reboot_if_sleep_ignored"
#: Firmware families found under the setting that it does not apply to, said once each.
_SAID: set[str] = set()


def not_stock(device_id: str, family: str) -> None:
    """The setting on a miner that runs other firmware (known only once it answers: a
    ``pyasic`` class): it does nothing there; said once per family, not per miner."""
    if family not in _SAID:
        _SAID.add(family)
        log.warning(
            "%s is set for miners that run %s firmware (first: %s): it applies to stock "
            "Antminer firmware only and is ignored for them",
            SETTING,
            family,
            device_id,
        )


@dataclass
class SleepReboot:
    """One stock miner's sleep that may need a reboot: what its readings showed since our
    last sleep, and whether the re-sent sleep is to be a reboot."""

    #: Configured asleep and hashing this much (TH/s), as the latest reading after our
    #: sleep showed it; None: not so (or no sleep of ours in force).
    hashing_ths: float | None = None
    due: bool = False  # the next sleep sent is a reboot
    spent: bool = False  # this sleep has had its reboot

    def read(self, conf_asleep: bool | None, ths: float | None, after_our_sleep: bool) -> None:
        """A reading: ``conf_asleep`` as ``get_miner_conf.cgi`` said it (None: not read)."""
        stuck = after_our_sleep and conf_asleep is True and ths is not None and ths > 0
        self.hashing_ths = ths if stuck else None

    def words(self, enabled: bool) -> str:
        """Why the sleep does not show, as the latest reading says it ("" when it does not)."""
        if self.hashing_ths is None:
            return ""
        said = (
            "configured asleep (get_miner_conf.cgi bitmain-work-mode 1), still hashing "
            f"{self.hashing_ths:,.1f} TH/s: this stock firmware may need a reboot to apply "
            "a sleep (asic-rs issue 245)"
        )
        if not enabled:
            return f"{said}; set {SETTING} = true under [devices.adapter] to reboot it once"
        if self.spent:
            return f"{said}; rebooted once for this sleep already ({SETTING}), not again"
        return f"{said}; {SETTING}: the sleep sent again reboots it, once"

    def unconfirmed(self, action: str, enabled: bool) -> None:
        """A command's read-back never showed it: a sleep still configured asleep and
        hashing is to be a reboot when it is sent again, once per sleep."""
        if enabled and action == "sleep" and self.hashing_ths is not None and not self.spent:
            self.due = True

    def woken(self) -> None:
        """A wake was sent: no reboot is due, and the next sleep may have its own."""
        self.due = self.spent = False

    def take(self) -> bool:
        """Whether the sleep sent now is the reboot (then spent): due, and the latest
        reading still shows the configuration asleep and the boards hashing."""
        go = self.due and self.hashing_ths is not None
        self.due = False
        self.spent = self.spent or go
        return go


async def reboot(device_id: str, kept: antminer.WebSession, timeout_s: float) -> str:
    """GET ``reboot.cgi``; the Applied note in words. A refusal (401, 404: a build without
    it) is ControlRejected; no answer, or one that is not JSON, may be the miner going down
    as it reboots: sent, and the read-back decides."""
    did = (
        f"configured asleep yet still hashing past the read-back deadline: rebooted ({SETTING}) "
        "so that the sleep it saved applies"
    )
    try:
        reply = await contain(device_id, "sleep: reboot", kept.get("reboot"), timeout_s)
    except DeviceTimeout as exc:  # not retried: a second reboot is not ours to send
        return f"{did}; {exc.reason}, the read-back decides"
    if isinstance(reply, dict) and reply.get("success") is False:
        message = str(reply.get("message", ""))
        if reply.get(antminer._KIND) == antminer.REFUSED:
            raise ControlRejected(device_id, f"sleep: reboot.cgi refused: {message}")
        return f"{did}; reboot.cgi not answered ({message[:80]}), the read-back decides"
    return did
