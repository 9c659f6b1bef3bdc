"""The Whatsminer API v2 write as the adapter sends it (adapters/whatsminer.py ``Wire``):
the same bytes pyasic's ``create_privileged_cmd`` makes, one cipher per token, answers
decrypted as pyasic decrypts them, and a connection refused called unreachable."""

from __future__ import annotations

import asyncio
import base64
import types

import pytest
from pyasic.rpc.btminer import (
    BTMinerRPCAPI,
    TokenData,
    create_privileged_cmd,
    parse_btminer_priviledge_data,
)

from adapters import whatsminer
from adapters.base import DeviceUnreachable
from adapters.sim.whatsminer import WhatsminerSim
from tests.support.ports import closed_port

TOKEN = TokenData(host_sign="Qx1tHs9cZ8mLk2", host_passwd_md5="v8K0q2HcVxkz3tq5WnX1p/")


@pytest.mark.parametrize(
    ("cmd", "params"),
    [
        ("power_off", (("respbefore", "true"),)),
        ("power_on", ()),
        ("adjust_power_limit", (("power_limit", "3500"),)),
    ],
)
def test_a_write_is_the_bytes_pyasic_sends_each_time(
    cmd: str, params: tuple[tuple[str, str], ...]
) -> None:
    wire = whatsminer.Wire(TOKEN)
    want = create_privileged_cmd(TOKEN, {"cmd": cmd, **dict(params)})
    for _ in range(3):  # made once, and the kept cipher gives the same bytes again
        assert wire.packet(cmd, params) == want
    assert whatsminer.Wire(TOKEN).packet("adjust_power_limit", (("power_limit", "3000"),)) == (
        create_privileged_cmd(TOKEN, {"cmd": "adjust_power_limit", "power_limit": "3000"})
    )


def test_answers_decrypt_as_pyasic_decrypts_them_and_a_bad_one_disturbs_none_after() -> None:
    sim = WhatsminerSim(host="127.0.0.1", port=0)
    key = sim._key()
    token = TokenData(host_sign="x", host_passwd_md5=sim._pwd_md5)
    wire = whatsminer.Wire(token)
    answer = WhatsminerSim._encrypt(key, sim._st(131, "API command OK"))
    assert wire.open(answer["enc"], answer) == parse_btminer_priviledge_data(token, answer)
    odd = {"enc": base64.b64encode(b"\x01" * 20).decode()}  # not whole AES blocks
    assert wire.open(odd["enc"], odd) == odd
    assert wire.open(answer["enc"], answer)["Msg"] == "API command OK"
    not_ours = {"STATUS": "E", "Msg": "invalid token"}
    assert wire.open("not base64 at all!", not_ours) == not_ours


@pytest.mark.parametrize(
    ("fn", "args"), [("stop_mining", ()), ("resume_mining", ()), ("set_power_limit", (3000,))]
)
def test_a_refused_connection_is_unreachable_not_a_refusal_nor_done(
    fn: str, args: tuple[int, ...]
) -> None:
    """pyasic answers a refused connection with ``{}``: read as the miner refusing a pause,
    and as a power limit accepted. Nothing reached the miner: it is unreachable."""
    rpc = BTMinerRPCAPI("127.0.0.1", port=closed_port())
    rpc.token = TokenData(host_sign="x", host_passwd_md5="y")
    miner = types.SimpleNamespace(rpc=rpc)
    with pytest.raises(DeviceUnreachable):
        asyncio.run(whatsminer.call("wm/x", miner, fn, args, 5.0))


def test_a_write_reaches_the_simulator_and_is_answered_done() -> None:
    async def go() -> list[str]:
        sim = WhatsminerSim(host="127.0.0.1", port=0)
        await sim.start()
        assert isinstance(sim._server, asyncio.Server)
        rpc = BTMinerRPCAPI("127.0.0.1", port=int(sim._server.sockets[0].getsockname()[1]))
        miner = types.SimpleNamespace(rpc=rpc)
        try:
            await whatsminer.call("wm/1", miner, "stop_mining", (), 5.0)
            await whatsminer.call("wm/1", miner, "set_power_limit", (3000,), 5.0)
            await whatsminer.call("wm/1", miner, "resume_mining", (), 5.0)
            return list(sim.writes)
        finally:
            await sim.stop()

    assert asyncio.run(go()) == ["power_off", "adjust_power_limit", "power_on"]
