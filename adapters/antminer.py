"""Stock Bitmain firmware (Antminer) writes, through pyasic's web API with checks.

pyasic's ``AntminerModern.stop_mining`` / ``resume_mining`` read the configuration
(``get_miner_conf.cgi``), set ``miner-mode`` and write it all back (``set_miner_conf.cgi``),
then return True whatever happened: a failed read becomes a default configuration (empty
pools) that is written anyway, and a refused write reads as success. Here the read must
be a configuration (it has ``pools`` and ``bitmain-work-mode``), the write's answer must
say success (``{"stats": "success", "code": "M000"}``), and anything else is an error
in words. Whether the miner then does it is for the read-back to say.
"""

from __future__ import annotations

from typing import Any

from adapters.base import AdapterError, BadReply, ControlRejected, DeviceUnreachable, contain

#: ``miner-mode`` values (pyasic config/mining: MiningModeNormal 0, MiningModeSleep 1).
NORMAL, SLEEP = 0, 1


async def set_work_mode(
    device_id: str, miner: Any, mode: int, as_str: bool, timeout_s: float
) -> None:
    """Write ``miner-mode`` = ``mode`` (as a JSON string when ``as_str``), keeping the rest
    of the miner's configuration as it reads."""
    from pyasic.config import MinerConfig, MiningModeConfig

    web = miner.web
    what = "sleep" if mode == SLEEP else "wake"
    conf = await contain(device_id, f"{what}: get_miner_conf", web.get_miner_conf(), timeout_s)
    _raise_web_error(device_id, f"{what}: get_miner_conf", conf)
    if not isinstance(conf, dict) or "pools" not in conf or "bitmain-work-mode" not in conf:
        raise BadReply(
            device_id,
            f"{what}: get_miner_conf answered no configuration ({str(conf)[:120]}); "
            "nothing written, so that its pools are not overwritten",
        )
    try:
        cfg = MinerConfig.from_am_modern(conf)
        cfg.mining_mode = MiningModeConfig.sleep() if mode == SLEEP else MiningModeConfig.normal()
        body = cfg.as_am_modern()
    except (KeyError, TypeError, ValueError) as exc:
        raise BadReply(device_id, f"{what}: configuration unusable: {exc!r}") from None
    body["miner-mode"] = str(mode) if as_str else mode
    reply = await contain(device_id, f"{what}: set_miner_conf", web.set_miner_conf(body), timeout_s)
    _raise_web_error(device_id, f"{what}: set_miner_conf", reply)
    if not isinstance(reply, dict):
        raise BadReply(device_id, f"{what}: set_miner_conf answered {str(reply)[:120]}")
    if reply.get("stats") != "success" and reply.get("code") != "M000":
        raise ControlRejected(device_id, f"{what}: set_miner_conf refused: {str(reply)[:160]}")


def _raise_web_error(device_id: str, what: str, reply: Any) -> None:
    """pyasic's web API answers its own failures as ``{"success": False, "message": ...}``:
    an HTTP error (no connection), JSON that does not decode, or any other status (401 for
    a wrong password)."""
    if not (isinstance(reply, dict) and reply.get("success") is False):
        return
    message = str(reply.get("message", ""))
    err: AdapterError
    if message.startswith("HTTP error"):
        err = DeviceUnreachable(device_id, f"{what}: {message}")
    elif "decode" in message.lower():
        err = BadReply(device_id, f"{what}: {message}")
    else:
        err = ControlRejected(device_id, f"{what}: {message} (a wrong web password answers 401)")
    raise err
