"""A device answer that cannot be read is said by its field, value and what was expected
(or what the library said), never by a Python exception's class name; a bug in gridsched's
own code keeps its name and its traceback is logged once. The answers are parsed by the
real parsers (pyasic's VNish data functions, json, our payload parsers)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from adapters.base import BadReply, DeviceTimeout, DeviceUnreachable, contain
from models.firmware import Family
from tests.support.words import assert_no_python_names


def _no_python_names(text: str) -> None:
    assert_no_python_names(text)


def _contained(aw: Any) -> BadReply | DeviceUnreachable | DeviceTimeout:
    async def main() -> Any:
        try:
            await contain("m/1", "telemetry", aw, 5.0)
        except (BadReply, DeviceUnreachable, DeviceTimeout) as exc:
            return exc
        raise AssertionError("contain did not raise")

    got: BadReply | DeviceUnreachable | DeviceTimeout = asyncio.run(main())
    return got


def _vnish() -> Any:
    from pyasic.miners.backends.vnish import VNish

    return VNish("127.0.0.1")  # no I/O until asked; its data functions parse what is handed


# -- contain: a library choking on an answer -------------------------------------------------


def test_pyasic_choking_on_a_power_that_is_not_a_number_is_said_in_words() -> None:
    """pyasic's VNish ``_get_wattage`` rounds ``miner.power_usage`` as it comes: before,
    ``telemetry: TypeError: type str doesn't define __round__ method``."""
    summary = {"miner": {"power_usage": "abc"}}
    err = _contained(_vnish()._get_wattage(web_summary=summary))
    assert isinstance(err, BadReply)  # unreadable, not unreachable
    assert str(err) == "m/1: telemetry: the answer has text where a number was expected", err
    err = _contained(_vnish()._is_mining(web_summary={"miner": {"miner_status": None}}))
    assert "null where an object or a list was expected" in str(err), err
    _no_python_names(str(err))


def test_an_answer_that_is_not_json_or_not_text_is_said_so() -> None:
    async def parse(raw: bytes) -> Any:
        return json.loads(raw)

    err = _contained(parse(b"<html>busy</html>"))
    assert isinstance(err, BadReply)
    assert "the answer is not JSON (Expecting value at line 1 column 1)" in str(err), err
    err = _contained(parse(b'{"power": "\xff"}'))
    assert isinstance(err, BadReply) and "not utf-8 text (byte 0xff" in str(err), err
    _no_python_names(str(err))


def test_contain_still_sorts_unreachable_from_unreadable() -> None:
    async def refused() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    async def hang() -> None:
        await asyncio.Event().wait()

    assert isinstance(_contained(refused()), DeviceUnreachable)

    async def short() -> Exception:
        try:
            await contain("m/1", "telemetry", hang(), 0.01)
        except DeviceTimeout as exc:
            return exc
        raise AssertionError("no timeout")

    assert "no answer within" in str(asyncio.run(short()))


_BUG = """
async def buggy(reading):
    return reading["power_w"]  # a reading that never had that key: our bug
"""


def _ours(name: str, filename: str) -> Any:
    """A coroutine function whose module is one of gridsched's own (``adapters...``), as if
    the code were in the package: a bug there is a bug, not an odd answer."""
    namespace: dict[str, Any] = {"__name__": name}
    exec(compile(_BUG, filename, "exec"), namespace)
    return namespace["buggy"]


def test_a_bug_in_our_code_keeps_its_name_and_its_traceback_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    buggy = _ours("adapters._probe_contain", "<bug in contain>")
    caplog.set_level(logging.ERROR, "gridsched.adapters")
    first = _contained(buggy({}))
    second = _contained(buggy({}))
    assert isinstance(first, BadReply) and str(first) == "m/1: telemetry: KeyError: 'power_w'"
    assert str(second) == str(first)
    logged = [r for r in caplog.records if r.exc_info is not None]
    assert len(logged) == 1 and "telemetry" in logged[0].getMessage(), caplog.records
    # the same KeyError raised by a library parsing an answer is the answer's fault
    lib = _ours("pyasic._probe_contain", "<library parse>")
    assert str(_contained(lib({}))) == "m/1: telemetry: no 'power_w' field"


# -- our parsers: the field, its value and what was expected -----------------------------------


def _miner_data(**fields: Any) -> SimpleNamespace:
    base: dict[str, Any] = dict(
        wattage=3250, hashrate=None, wattage_limit=3300, hashboards=[], errors=[], is_mining=True
    )
    base.update(fields)
    return SimpleNamespace(**base)


def test_pyasic_data_with_a_field_that_is_not_a_number_names_the_field() -> None:
    """Before: ``pyasic data unusable: ValueError: could not convert string to float:
    'abc'``."""
    from adapters.payloads import parse_miner_data

    with pytest.raises(BadReply) as err:
        parse_miner_data("m/1", _miner_data(wattage="abc"), 0.0)
    assert str(err.value) == "m/1: pyasic data unusable: its wattage is 'abc', not a number"
    with pytest.raises(BadReply) as err:
        parse_miner_data("m/1", _miner_data(hashboards=[SimpleNamespace(chip_temp="hot")]), 0.0)
    assert "its hashboards" in str(err.value) and "'hot'" in str(err.value), err.value
    _no_python_names(str(err.value))
    no_limit = SimpleNamespace(wattage=1, hashrate=None, hashboards=[], errors=[], is_mining=True)
    with pytest.raises(BadReply) as err:
        parse_miner_data("m/1", no_limit, 0.0)
    assert "no 'wattage_limit' field" in str(err.value), err.value


def test_asic_rs_data_with_a_field_that_is_not_a_number_names_the_field() -> None:
    from adapters.asic_rs import parse_rs_data

    d = SimpleNamespace(wattage="abc", hashrate=None, tuning_target=None, is_mining=True)
    with pytest.raises(BadReply) as err:
        parse_rs_data("m/1", d, 0.0, Family.LUXOS)
    assert str(err.value) == "m/1: asic-rs data unusable: its wattage is 'abc', not a number"


class _Session:
    """A VNish web session that answers from a table (its transport is tested elsewhere)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    async def get(self, device_id: str, command: str) -> Any:
        return self.answers.get(command, {})


class _Rpc:
    async def send_command(self, command: str) -> Any:
        return {}


def test_a_vnish_reading_says_which_answer_and_field_was_wrong() -> None:
    """pyasic's VNish data functions parse the four answers; before, ``telemetry:
    TypeError: type str doesn't define __round__ method``."""
    from adapters import vnish

    def read(answers: dict[str, Any]) -> str:
        miner = _vnish()
        miner.rpc = _Rpc()
        with pytest.raises(BadReply) as err:
            asyncio.run(vnish.read("m/1", miner, _Session(answers), 0.0))  # type: ignore[arg-type]
        return str(err.value)

    text = read({"summary": {"miner": {"power_usage": "abc"}}})
    assert text == (
        "m/1: telemetry: the web summary answer's miner.power_usage is 'abc', not a number"
    ), text
    text = read({"settings": {"miner": {"overclock": {"preset": "max"}}}})
    assert "web settings answer's miner.overclock.preset is 'max'" in text, text
    text = read({"summary": {"miner": {"power_usage": 3000, "miner_status": None}}})
    assert "web summary answer's miner.miner_status is null, not an object" in text, text
    _no_python_names(text)


# -- the GPU agent ------------------------------------------------------------------------------


def test_the_gpu_agent_says_a_backend_failure_in_words_and_keeps_a_bugs_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from adapters.gpu_agent import GpuAgent

    class Undecodable:  # NVML answering a name that is not UTF-8, as a library decodes it
        label = "probe"

        async def count(self) -> int:
            return 1

        async def call(self, index: int, call: str, *args: float) -> Any:
            return bytes([0xFF]).decode("utf-8")

    buggy = _ours("adapters._probe_agent", "<bug in a backend>")

    class Buggy(Undecodable):
        async def call(self, index: int, call: str, *args: float) -> Any:
            return await buggy({})

    async def answer(backend: Any) -> dict[str, Any]:
        agent = GpuAgent(backend, port=0)
        agent.gpus = 1
        got: dict[str, Any] = await agent._answer({"op": "gpu", "call": "power_w", "index": 0})
        return got

    caplog.set_level(logging.ERROR)
    said = asyncio.run(answer(Undecodable()))
    assert said["error"] == "power_w: the answer is not utf-8 text (byte 0xff at position 0)"
    said = asyncio.run(answer(Buggy()))
    assert said["error"] == "power_w: KeyError: 'power_w'", said
    assert [r.exc_info is not None for r in caplog.records].count(True) == 1, caplog.records


def test_a_luxos_reading_says_which_figure_is_not_a_number() -> None:
    """Before: ``LuxOS reply lacks or garbles could not convert string to float: 'abc'``."""
    from adapters.payloads import parse_luxos

    def part(key: str, row: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"STATUS": [{"STATUS": "S"}], key: [row]}]

    reply = {
        "power": part("POWER", {"Watts": 3000}),
        "summary": part("SUMMARY", {"GHS 5s": None}),
        "stats": part("STATS", {}),
        "config": part("CONFIG", {"Profile": "default"}),
        "profiles": part("PROFILES", {"Profile Name": "default", "Watts": 3000}),
    }
    with pytest.raises(BadReply) as err:
        parse_luxos("m/1", reply, 0.0)
    text = str(err.value)
    assert text == (
        "m/1: LuxOS reply lacks or garbles summary's GHS 5s: "
        "the answer has null where a number was expected"
    ), text
    reply["power"] = part("POWER", {"Watts": "abc"})
    with pytest.raises(BadReply) as err:
        parse_luxos("m/1", reply, 0.0)
    assert str(err.value).endswith("power's Watts: 'abc' is not a number"), err.value


# -- the audit trail's writer --------------------------------------------------------------------


def test_an_audit_record_the_store_refuses_is_said_by_what_it_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real store file that reached its size limit: before, /v1/status and the log read
    ``OperationalError: database or disk is full``."""
    from scheduler.audit.store import Store
    from scheduler.service.daemon.counters import Counters
    from scheduler.service.daemon.recorder import Recorder

    class Broken:  # a store with a bug: no real store can be made to raise one
        async def record(self, kind: str, payload: Any, at: float | None = None) -> int:
            raise KeyError("seq")

    async def main() -> tuple[str | None, str | None]:
        store = Store(tmp_path / "s.db")
        try:
            pages = await store.write(lambda con: con.execute("PRAGMA page_count").fetchone()[0])
            await store.write(lambda con: con.execute(f"PRAGMA max_page_count = {pages}"))
            recorder = Recorder(store, Counters())
            assert not await recorder.audit("note", {"text": "x" * 100_000})
            full = recorder.error
        finally:
            store.close()
        recorder = Recorder(Broken(), Counters())  # type: ignore[arg-type]
        assert not await recorder.audit("note", {})
        return full, recorder.error

    caplog.set_level(logging.ERROR, "gridsched.daemon")
    full, bug = asyncio.run(main())
    assert full is not None and "the disk is full" in full and "SQLITE_FULL" in full, full
    assert "OperationalError" not in full
    assert bug == "KeyError: 'seq'"  # a bug keeps its name, and its traceback
    assert [r.exc_info is not None for r in caplog.records] == [False, True], caplog.records
