"""benchmarks/fleet_control.py on a handful of miners: the mixed fleet is driven through the
daemon's controller, every command is confirmed by read-back, none is reported done that
the simulator does not show, and miners that accept and do nothing end unconfirmed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import fleet_control, fleet_sim  # noqa: E402
from tests.support.daemon import free_loopback_base  # noqa: E402

# each test's miners on a loopback /24 chosen at random and checked free: two runs on one
# host (or a fixed base another test uses) never share them
FAST = ["--sleep-s", "0.2", "--wake-s", "0.4", "--rounds", "1"]


def test_mix_is_validated() -> None:
    assert fleet_sim.parse_mix("luxos:2, braiins:3") == [("luxos", 2), ("braiins", 3)]
    with pytest.raises(Exception, match="firmware 'bogus': valid are luxos"):
        fleet_sim.parse_mix("bogus:2")
    with pytest.raises(Exception, match="COUNT >= 1"):
        fleet_sim.parse_mix("luxos:0")


def test_commands_go_family_by_family_or_one_of_each_in_turn() -> None:
    family = {"l1": "luxos", "l2": "luxos", "l3": "luxos", "a1": "antminer", "b1": "braiins"}
    assert fleet_control.command_order(family, "grouped") == ["l1", "l2", "l3", "a1", "b1"]
    assert fleet_control.command_order(family, "interleaved") == ["l1", "a1", "b1", "l2", "l3"]


def test_mixed_fleet_confirmed_by_read_back(tmp_path: Path) -> None:
    sim_prof = tmp_path / "sim.prof"
    mix = ["--mix", "luxos:2,braiins:2,whatsminer:2", "--base", free_loopback_base(6)]
    b = fleet_control.main([*mix, *FAST, "--sim-profile", str(sim_prof)])
    t = b.tally["all"]
    assert t.sent == 12  # 6 miners, a sleep and a wake each
    assert (t.confirmed, t.late, t.unconfirmed, t.failed, t.false_done) == (12, 0, 0, 0, 0)
    # every command reached its simulated miner, and the round's last arrival is reported
    assert t.not_received == 0 and [len(t.received_s[k]) for k in ("sleep", "wake")] == [1, 1]
    assert {fw for fw in b.tally if fw != "all"} == {"luxos", "braiins", "whatsminer"}
    # --sim-profile: the simulator profiled while the commands were in flight: the
    # Braiins OS+ writes' handlers are in it
    import pstats

    handlers = {fn for _file, _line, fn in pstats.Stats(str(sim_prof)).stats}  # type: ignore[attr-defined]
    assert {"_pause", "_resume"} <= handlers


def test_ignoring_miners_are_unconfirmed_never_done() -> None:
    b = fleet_control.main(
        [
            "--mix",
            "luxos:4",
            "--base",
            free_loopback_base(4),
            "--ignore-share",
            "0.5",
            "--deadline-scale",
            "0.02",
            *FAST,
        ]
    )
    t = b.tally["all"]
    assert t.false_done == 0
    # the two ignoring miners: their sleep never shows, and their wake at a new preset neither
    assert t.unconfirmed == 4 and t.confirmed == 4
    assert t.accepted_not_in_effect == 4  # what "done" meant before read-back


def test_expired_luxos_sessions_cost_no_failed_attempt() -> None:
    b = fleet_control.main(
        [
            "--mix",
            "luxos:2",
            "--base",
            free_loopback_base(2),
            # a session renewed at half its 2 s TTL, read every 0.5 s: a command has 0.5 s
            # of slack for a loaded host (at 0.3 s it had 0.075 s, and was retried at load 15)
            "--session-ttl-s",
            "2.0",
            "--gap-s",
            "2.2",
            *FAST,
        ]
    )
    t = b.tally["all"]
    assert b.min_spacing_s > 2.0
    assert (t.retried, t.failed, t.stage_failed, t.confirmed) == (0, 0, 0, 4)


def test_http_clients_find_sniffio() -> None:
    """httpcore imports sniffio on every request (pyasic's web clients: stock Antminer,
    VNish); without it each import fails anew, a search of sys.path per request."""
    assert importlib.util.find_spec("sniffio") is not None


def test_the_simulators_profiler_is_turned_by_its_control_port_only_when_it_has_one() -> None:
    import cProfile

    from adapters.sim.fleet import SimFleet

    sim = SimFleet([], control_port=None)
    with pytest.raises(ValueError, match="unknown op 'profile'"):
        sim.handle({"op": "profile", "on": True})
    prof = cProfile.Profile()
    fleet_sim.with_profiler(sim, prof)
    assert sim.handle({"op": "profile", "on": True}) == {"ok": True}
    sum(range(10))  # something to profile
    assert sim.handle({"op": "profile", "on": False}) == {"ok": True}
    assert any("sum" in str(entry.code) for entry in prof.getstats())
    assert sim.handle({"op": "curtails"}) == {"ok": True, "curtails": {}}  # the rest as before
