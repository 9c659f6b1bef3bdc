"""The fleet's slots (adapters/fleet_slots.py): a bound served in arrival order, whose
release costs the same however many wait, and that loses no slot to a cancelled waiter."""

from __future__ import annotations

import asyncio

import pytest

from adapters.fleet_slots import FifoSlots


def test_a_bound_below_one_is_refused_in_words() -> None:
    with pytest.raises(ValueError, match="0 is not a valid bound"):
        FifoSlots(0)


def test_holders_never_exceed_the_bound_and_are_served_in_arrival_order() -> None:
    async def main() -> list[int]:
        slots = FifoSlots(3)
        held, most, order = 0, 0, []

        async def one(k: int) -> None:
            nonlocal held, most
            async with slots:
                held += 1
                most = max(most, held)
                order.append(k)
                await asyncio.sleep(0)
                held -= 1

        await asyncio.gather(*(one(k) for k in range(50)))
        assert most == 3
        assert slots.free == 3 and slots.waiting == 0
        return order

    assert asyncio.run(main()) == list(range(50))


def test_a_burst_of_releases_wakes_each_waiter_once_without_walking_the_woken() -> None:
    """256 holders ending in one turn of the loop: asyncio.Semaphore's release walked every
    waiter already woken (k futures for the k-th release); here each release pops one."""

    class Counted(asyncio.Future[None]):
        checks = 0

        def done(self) -> bool:
            Counted.checks += 1
            return super().done()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        slots = FifoSlots(256)
        gate = asyncio.Event()
        real = loop.create_future
        loop.create_future = lambda: Counted(loop=loop)  # type: ignore[method-assign]
        try:

            async def one() -> None:
                async with slots:
                    await gate.wait()

            tasks = [asyncio.ensure_future(one()) for _ in range(1024)]
            await asyncio.sleep(0)
            assert slots.waiting == 1024 - 256
            gate.set()
            await asyncio.gather(*tasks)
        finally:
            loop.create_future = real  # type: ignore[method-assign]
        # one check per release that found a waiter (768), none for the woken ones
        assert Counted.checks <= 1024, Counted.checks
        assert slots.free == 256

    asyncio.run(main())


def test_a_cancelled_waiter_loses_no_slot_whether_or_not_it_was_handed_one() -> None:
    async def main() -> None:
        slots = FifoSlots(1)
        release = asyncio.Event()
        got: list[str] = []

        async def hold(name: str) -> None:
            async with slots:
                got.append(name)
                await release.wait()

        await slots.__aenter__()  # the first holder, released by hand below
        queued = asyncio.ensure_future(hold("cancelled while queued"))
        handed = asyncio.ensure_future(hold("cancelled once handed"))
        last = asyncio.ensure_future(hold("last"))
        await asyncio.sleep(0)
        assert slots.waiting == 3
        queued.cancel()
        await asyncio.sleep(0)
        release.set()
        await slots.__aexit__(None, None, None)  # hands the slot to `handed` (skips `queued`)
        handed.cancel()  # in the same turn, before it runs: it passes the slot on to `last`
        await asyncio.gather(handed, queued, return_exceptions=True)
        await asyncio.wait_for(last, 1.0)
        assert got == ["last"]
        assert slots.free == 1 and slots.waiting == 0

    asyncio.run(main())
