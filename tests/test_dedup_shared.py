"""The helpers that now serve two places each: bmminer's API for the stock and VNish simulators."""

from __future__ import annotations

import json
from typing import Any

from adapters.sim.antminer import AntminerSim
from adapters.sim.vnish import VnishSim

# -- bmminer's API, as stock Antminer and VNish serve it ----------------------------------


def _ask(sim: Any, command: str) -> dict[str, Any]:
    out: dict[str, Any] = sim.answer(json.dumps({"command": command}).encode())
    return out


def test_stock_and_vnish_answer_summary_alike() -> None:
    for sim in (AntminerSim("127.0.0.1"), VnishSim("127.0.0.2")):
        s = _ask(sim, "summary")
        assert s["STATUS"][0]["Description"] == "bmminer 1.0.0"
        body = s["SUMMARY"][0]
        assert isinstance(body["GHS 5s"], str) and float(body["GHS 5s"]) > 0
        assert body["Accepted"] == 1
        assert _ask(sim, "pools")["POOLS"][0]["URL"].startswith("stratum+tcp://")
        assert _ask(sim, "summary+pools")["STATUS"][0]["Msg"] == "Invalid command"


def test_each_firmware_keeps_its_own_stats() -> None:
    stock, vn = AntminerSim("127.0.0.1"), VnishSim("127.0.0.2")
    head, board = _ask(stock, "stats")["STATS"]
    t = stock.state.temp_c
    assert head == {"BMMiner": "1.0.0", "Miner": "uart_trans.1.3", "Type": stock.model}
    assert [k for k in board if k.startswith("fan") and k != "fan_num"] == [
        "fan1",
        "fan2",
        "fan3",
    ]
    assert (board["temp1"], board["temp2_1"]) == (round(t - 6), round(t + 6))
    head, board = _ask(vn, "stats")["STATS"]
    t = vn.state.temp_c
    assert head["Miner"] == "Vnish 1.2.6" and head["Type"].endswith("(Vnish 1.2.6)")
    assert [board[f"fan{i}"] for i in (1, 2, 3, 4)] == [4800] * 4
    assert (board["temp1"], board["temp2_1"]) == (round(t + 6), round(t - 6))
    for sim in (stock, vn):  # asleep: no hash, and each firmware's idle fans
        sim.state.phase, sim.state.ramp = "sleeping", None
    _h, board = _ask(stock, "stats")["STATS"]
    assert (board["chain_rate1"], board["fan1"]) == ("0.00", 0)
    _h, board = _ask(vn, "stats")["STATS"]
    assert (board["chain_rate1"], board["fan4"]) == ("0.00", 1200)
    assert "Type" not in _ask(vn, "version")["VERSION"][0]  # discovery must read VNish
    assert _ask(stock, "version")["VERSION"][0]["Type"] == stock.model
