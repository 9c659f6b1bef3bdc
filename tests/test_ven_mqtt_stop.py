"""Stopping a VEN subscribed over MQTT (a real mosquitto broker) is clean: its listener ends
with the VEN, it says goodbye to the broker, and asyncio has no exception left that nobody
retrieved (benchmarks/ven_latency.py printed aiomqtt's "Future exception was never
retrieved" when its MQTT round ended). Skipped without ../shared/openadr3 or mosquitto.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.openadr import skip_without_openadr3

skip_without_openadr3()

from scheduler.service.ven import Ven  # noqa: E402
from tests.test_ven import (  # noqa: E402
    Mosquitto,
    Sink,
    config,
    mosquitto,  # noqa: F401 (a fixture)
    mosquitto_exe,  # noqa: F401 (a fixture)
    run,
)
from tests.vtn_double import VtnDouble  # noqa: E402

# openapi-core checks the bearer scheme and warns that it cannot check the oauth2 one
pytestmark = pytest.mark.filterwarnings("ignore:Unsupported scheme type:UserWarning")
NEVER_RETRIEVED = re.compile(r"(Future|Task) exception was never retrieved")
GOODBYE = re.compile(r"Received DISCONNECT from auto-")  # aiomqtt's client ids: auto-...


def never_retrieved(caplog: pytest.LogCaptureFixture) -> list[str]:
    gc.collect()  # asyncio says so when the future is collected
    return [
        f"{r.getMessage()} {r.exc_info[1] if r.exc_info else ''}"
        for r in caplog.records
        if NEVER_RETRIEVED.search(r.getMessage())
    ]


def listeners() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "ven-mqtt" and not t.done()]


async def started(vtn: VtnDouble) -> Ven:
    ven = Ven(config(vtn, mqtt=True), Sink())
    await ven.start()
    assert ven.mqtt is not None
    await asyncio.wait_for(ven.mqtt.connected.wait(), 30)
    return ven


def test_stop_ends_the_mqtt_listener_and_leaves_nothing_unretrieved(
    mosquitto: Mosquitto,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncio")
    vtn = VtnDouble(mqtt_port=mosquitto.port).start()
    try:

        async def go() -> tuple[int, bool]:
            ven = await started(vtn)
            await ven.stop()
            left = len(listeners())
            assert mosquitto.child is not None
            if not left:  # it left the broker, as a client that goes on purpose does
                await asyncio.to_thread(mosquitto.child.wait_line, GOODBYE, 10)
            # the broker goes while the loop runs: a listener left behind loses it now
            mosquitto.stop()
            await asyncio.sleep(0.5)
            assert ven.mqtt is not None
            return left, ven.mqtt.status["connected"]

        left, connected = run(go())
    finally:
        vtn.close()
    assert never_retrieved(caplog) == []
    assert left == 0, "the MQTT listener still runs after the VEN stopped"
    assert not connected, "status says connected after the VEN stopped"


def test_a_broker_lost_as_the_ven_stops_leaves_nothing_unretrieved(
    mosquitto: Mosquitto,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker's connection breaks in the same turn of the loop as the stop: aiomqtt's
    client, told to leave while already disconnected, keeps the disconnection's error in a
    future that nobody reads."""
    import aiomqtt

    clients: list[Any] = []
    enter: Callable[..., Any] = aiomqtt.Client.__aenter__

    async def entered(self: Any) -> Any:
        clients.append(self)
        return await enter(self)

    monkeypatch.setattr(aiomqtt.Client, "__aenter__", entered)
    caplog.set_level(logging.WARNING, logger="asyncio")
    vtn = VtnDouble(mqtt_port=mosquitto.port).start()
    try:

        async def go() -> None:
            ven = await started(vtn)
            mosquitto.stop()
            lost = clients[-1]._disconnected  # the broken connection's future
            async with asyncio.timeout(30):
                while not lost.done():
                    await asyncio.sleep(0)
            await ven.stop()  # before the listener has woken to the loss

        run(go())
    finally:
        vtn.close()
    clients.clear()  # the client holds the future: collected only once it goes
    assert never_retrieved(caplog) == []
