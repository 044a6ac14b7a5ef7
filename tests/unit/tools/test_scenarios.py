"""Scripted scenarios: the fixes show what was scripted, the facts are exact, and the
engine (fed like the accuracy tests feed it) measures what the ground truth says."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest
from typer.testing import CliRunner

from processor.core.contract import decode_entry
from processor.core.position import Position
from processor.domain.geofences import GeofenceIndex
from processor.domain.timing import Crossing, TimingSettings, recompute_window
from processor.tools.simulator import ground_truth, scenarios
from processor.tools.simulator.cli import app
from processor.tools.simulator.event import SampleEvent, load_event
from processor.tools.simulator.generator import Entry, GeneratorConfig, Simulation
from processor.tools.simulator.scenarios import (
    AnyFacts,
    Facts,
    MissFacts,
    MissWaypoint,
    Offline,
    OfflineFacts,
    Scenario,
    Speeding,
    SpeedingFacts,
    Stop,
    StopFacts,
)
from processor.tools.simulator.schedule import LegPlan
from processor.tools.simulator.trajectory import Trajectory
from tests.unit.domain import accuracy

DEVICES = 5  # entry 5 drives unscripted
SCRIPT = (
    Scenario(entry=2, stage=1, action=Stop(fraction=0.5, duration_s=120.0)),
    Scenario(entry=1, stage=1, action=Speeding(over_kmh=12.0, duration_s=8.0, tolerance_kmh=5.0)),
    Scenario(entry=3, stage=1, action=MissWaypoint(geofence=2)),
    Scenario(
        entry=4,
        stage=2,
        action=Offline(before_finish_s=60.0, upload_after_finish_s=120.0, order="newest-first"),
    ),
)
ENGINE_S = 0.1  # the engine's crossings at 1 Hz without noise, against the truth
F = TypeVar("F", bound=Facts)


@dataclass(frozen=True)
class Run:
    sim: Simulation
    entries: list[Entry]
    fixes: dict[str, list[Position]]  # arrival order
    truth: list[ground_truth.TruthRecord]
    facts: list[AnyFacts]
    found: dict[str, list[Crossing]]


def _run(event: SampleEvent, index: GeofenceIndex, script: tuple[Scenario, ...]) -> Run:
    sim = Simulation(event, GeneratorConfig(devices=DEVICES, seed=1, scenarios=script))
    entries = list(sim.entries())
    fixes: dict[str, list[Position]] = {}
    for entry in entries:
        pos = decode_entry(f"{entry.received_ms}-0", entry.fields())
        assert isinstance(pos, Position), pos
        fixes.setdefault(pos.device_id, []).append(pos)
    found = {d: recompute_window(f, index, settings=TimingSettings()) for d, f in fixes.items()}
    facts = scenarios.expected(sim)
    return Run(sim, entries, fixes, ground_truth.compute(sim), facts, found)


@pytest.fixture(scope="module")
def event() -> SampleEvent:
    return load_event()


@pytest.fixture(scope="module")
def index(event: SampleEvent) -> GeofenceIndex:
    return accuracy.index_of(event)


@pytest.fixture(scope="module")
def scripted(event: SampleEvent, index: GeofenceIndex) -> Run:
    return _run(event, index, SCRIPT)


@pytest.fixture(scope="module")
def plain(event: SampleEvent, index: GeofenceIndex) -> Run:
    return _run(event, index, ())


def _one(run: Run, kind: type[F]) -> F:
    found = [f for f in run.facts if isinstance(f, kind)]
    assert len(found) == 1
    return found[0]


def _leg(run: Run, facts: Facts) -> LegPlan:
    plan = next(p for p in run.sim.plans if p.device_id == facts.device_id)
    return plan.legs[facts.leg]


def _fixes_on(run: Run, facts: Facts) -> list[Position]:
    leg = _leg(run, facts)
    mine = run.fixes[facts.device_id]
    return sorted(
        (p for p in mine if leg.first_ms <= p.ts_ms <= leg.last_ms), key=lambda p: p.ts_ms
    )


def _gates(run: Run, device_id: str, stage: int) -> dict[int, float]:
    found = run.found[device_id]
    return {c.geofence_id: c.crossed_at_ms for c in found if c.stage_id == stage and c.direction}


def _truth(run: Run, device_id: str, stage: int) -> dict[tuple[int, str], float]:
    return {
        (r.geofence, r.direction or r.transition or "closest"): r.exact_ms
        for r in run.truth
        if r.device_id == device_id and r.stage == stage
    }


def _speed(traj: Trajectory, t_ms: float) -> float:
    return traj.state(t_ms)[3]


def _physical(run: Run, facts: Facts) -> None:
    """The car's own acceleration and braking bound the profile; fix speeds follow."""
    plan = next(p for p in run.sim.plans if p.device_id == facts.device_id)
    car = plan.car
    prof = plan.legs[facts.leg].trajectory.profile
    assert all(-car.brake - 1e-9 <= a <= car.acc + 1e-9 for a in prof.a)
    assert all(v >= 0.0 for v in prof.v)
    fixes = _fixes_on(run, facts)
    bound = max(car.acc, car.brake) * 3.6
    for a, b in itertools.pairwise(fixes):
        dt = (b.ts_ms - a.ts_ms) / 1000.0
        assert abs((b.speed or 0.0) - (a.speed or 0.0)) <= bound * dt + 1.0


# --- stop -----------------------------------------------------------------------------


def test_stop_stands_still_for_its_duration_where_scripted(scripted: Run) -> None:
    stop = _one(scripted, StopFacts)
    leg = _leg(scripted, stop)
    traj = leg.trajectory
    assert stop.moving_at_ms - stop.stopped_at_ms == pytest.approx(120_000.0, abs=1e-3)
    fixes = _fixes_on(scripted, stop)
    moving = [p for p in fixes if traj.t_go_ms < p.ts_ms < traj.t_stop_ms]
    standing = [p for p in moving if p.speed == 0.0]
    assert abs(len(standing) * 1000 - 120_000) <= 1000
    assert all(stop.stopped_at_ms - 1000 < p.ts_ms < stop.moving_at_ms + 1000 for p in standing)
    to_xy = scripted.sim.course.projection.to_xy
    here = to_xy(stop.longitude, stop.latitude)
    assert all(math.dist(to_xy(p.longitude, p.latitude), here) < 0.05 for p in standing)
    _physical(scripted, stop)


def test_stop_times_are_exact_on_the_kinematics(scripted: Run) -> None:
    stop = _one(scripted, StopFacts)
    traj = _leg(scripted, stop).trajectory
    slow = stop.threshold_kmh / 3.6
    # the facts' times are rounded to 0.1 µs: speed is within 1e-6 m/s of zero there
    assert _speed(traj, stop.stopped_at_ms) == pytest.approx(0.0, abs=1e-6)
    assert _speed(traj, stop.moving_at_ms) == pytest.approx(0.0, abs=1e-6)
    assert _speed(traj, (stop.stopped_at_ms + stop.moving_at_ms) / 2.0) == 0.0
    assert _speed(traj, stop.stopped_at_ms - 10.0) > 0.0
    assert _speed(traj, stop.moving_at_ms + 10.0) > 0.0
    assert _speed(traj, stop.below_at_ms) == pytest.approx(slow, abs=1e-6)
    assert _speed(traj, stop.above_at_ms) == pytest.approx(slow, abs=1e-6)
    assert stop.below_at_ms < stop.stopped_at_ms < stop.moving_at_ms < stop.above_at_ms
    for p in _fixes_on(scripted, stop):
        if stop.below_at_ms < p.ts_ms < stop.above_at_ms:
            assert (p.speed or 0.0) <= stop.threshold_kmh
        elif stop.below_at_ms - 10_000 < p.ts_ms < stop.above_at_ms + 10_000:
            assert (p.speed or 0.0) >= stop.threshold_kmh


def test_stop_shifts_later_gates_as_the_engine_measures(scripted: Run, plain: Run) -> None:
    stop = _one(scripted, StopFacts)
    assert stop.lost_s > stop.duration_s
    truth = _truth(scripted, stop.device_id, stop.stage)
    unshifted = _truth(plain, stop.device_id, stop.stage)
    engine = _gates(scripted, stop.device_id, stop.stage)
    engine_before = _gates(plain, stop.device_id, stop.stage)
    later = {g.geofence for g in stop.later_gates}
    assert later == {6, 7}
    for gate in stop.later_gates:
        assert truth[gate.geofence, "forward"] == pytest.approx(gate.exact_ms, abs=1e-3)
        assert unshifted[gate.geofence, "forward"] == pytest.approx(gate.unshifted_ms, abs=1e-3)
        shift = gate.exact_ms - gate.unshifted_ms
        assert shift == pytest.approx(stop.lost_s * 1000.0, abs=1.0)
        assert abs(engine[gate.geofence] - gate.exact_ms) <= ENGINE_S * 1000
        measured = engine[gate.geofence] - engine_before[gate.geofence]
        assert measured == pytest.approx(shift, abs=ENGINE_S * 1000)
    for geofence in set(engine) - later:  # gates before the stop: untouched
        assert truth[geofence, "forward"] == unshifted[geofence, "forward"]


def test_stop_with_gps_noise_still_reports_speed_zero(event: SampleEvent) -> None:
    stop = Scenario(entry=1, stage=3, action=Stop(at_m=2500.0, duration_s=30.0))
    sim = Simulation(event, GeneratorConfig(devices=1, noise_m=2.0, scenarios=(stop,)))
    facts = scenarios.expected(sim)[0]
    assert isinstance(facts, StopFacts)
    assert facts.s_m == pytest.approx(2500.0, abs=1e-6)
    to_xy = sim.course.projection.to_xy
    here = to_xy(facts.longitude, facts.latitude)
    spots = []
    for entry in sim.entries():
        pos = decode_entry(f"{entry.received_ms}-0", entry.fields())
        assert isinstance(pos, Position)
        if facts.stopped_at_ms <= pos.ts_ms <= facts.moving_at_ms:
            assert pos.speed == 0.0
            spots.append(to_xy(pos.longitude, pos.latitude))
    assert len(spots) in (30, 31)
    assert len(set(spots)) > 20
    assert all(math.dist(xy, here) < 12.0 for xy in spots)


# --- speeding -------------------------------------------------------------------------


def test_speeding_holds_limit_plus_over_for_exactly_its_duration(scripted: Run) -> None:
    fast = _one(scripted, SpeedingFacts)
    assert (fast.zone, fast.limit_kmh) == (4, 60.0)
    assert fast.plateau_to_ms - fast.plateau_from_ms == pytest.approx(8000.0, abs=1e-3)
    assert fast.max_speed_kmh == pytest.approx(72.0, abs=1e-6)
    in_zone = [p for p in _fixes_on(scripted, fast) if fast.entry_ms < p.ts_ms < fast.exit_ms]
    top = [p for p in in_zone if p.speed == 72.0]
    assert 7 <= len(top) <= 9
    assert max(p.speed or 0.0 for p in in_zone) == 72.0
    ramps = (fast.plateau_from_ms - 2000, fast.plateau_to_ms + 2000)
    assert all((p.speed or 0.0) <= 60.0 for p in in_zone if not ramps[0] < p.ts_ms < ramps[1])
    _physical(scripted, fast)


def test_speeding_figures_match_the_kinematics(scripted: Run) -> None:
    """Sampled every millisecond of the visit, the figures agree to the sampling step."""
    fast = _one(scripted, SpeedingFacts)
    traj = _leg(scripted, fast).trajectory
    limit, tolerance = fast.limit_kmh / 3.6, (fast.limit_kmh + fast.tolerance_kmh) / 3.6
    step = 1.0
    speeds = [_speed(traj, t) for t in _frange(fast.entry_ms, fast.exit_ms, step)]
    above = sum(step for v in speeds if v > limit) / 1000.0
    above_tol = sum(step for v in speeds if v > tolerance) / 1000.0
    gained = sum(max(0.0, v - limit) for v in speeds) * step / 1000.0
    plateau = sum(step for v in speeds if v > 72.0 / 3.6 - 1e-9) / 1000.0
    assert above == pytest.approx(fast.above_limit_s, abs=0.003)
    assert above_tol == pytest.approx(fast.above_tolerance_s, abs=0.003)
    assert gained == pytest.approx(fast.gained_m, abs=0.01)
    assert plateau == pytest.approx(8.0, abs=0.003)
    assert 8.0 < fast.above_tolerance_s < fast.above_limit_s < 8.0 + 3.0
    assert fast.gained_m > 8.0 * 12.0 / 3.6


def test_speeding_zone_truth_and_engine_agree(scripted: Run) -> None:
    fast = _one(scripted, SpeedingFacts)
    exit_record = next(
        r
        for r in scripted.truth
        if r.device_id == fast.device_id and r.geofence == fast.zone and r.transition == "exit"
    )
    assert exit_record.visit_max_speed_kmh == pytest.approx(72.0, abs=1e-3)
    assert exit_record.visit_over_limit_ms == round(fast.above_limit_s * 1000.0)
    found = {
        c.transition: c.crossed_at_ms
        for c in scripted.found[fast.device_id]
        if c.geofence_id == fast.zone
    }
    assert abs(found["entry"] - fast.entry_ms) <= ENGINE_S * 1000
    assert abs(found["exit"] - fast.exit_ms) <= ENGINE_S * 1000


def _frange(start: float, stop: float, step: float) -> list[float]:
    return [start + step * (k + 0.5) for k in range(int((stop - start) / step))]


# --- missed waypoint ------------------------------------------------------------------


def test_missed_waypoint_is_passed_beyond_its_radius(scripted: Run, event: SampleEvent) -> None:
    miss = _one(scripted, MissFacts)
    assert (miss.geofence, miss.radius_m, miss.visited) == (2, 50.0, False)
    assert miss.distance_m > miss.radius_m + 25.0
    record = next(
        r for r in scripted.truth if r.device_id == miss.device_id and r.geofence == miss.geofence
    )
    assert record.within_radius is False
    assert record.distance_m == pytest.approx(miss.distance_m, abs=1e-3)
    centre = scripted.sim.course.by_id[miss.stage].waypoints[0].centre
    to_xy = scripted.sim.course.projection.to_xy
    nearest = min(
        math.dist(to_xy(p.longitude, p.latitude), centre) for p in _fixes_on(scripted, miss)
    )
    assert nearest > miss.radius_m + 25.0
    engine = scripted.found[miss.device_id]
    assert not [c for c in engine if c.geofence_id == miss.geofence]
    others = [d for d in scripted.found if d != miss.device_id]
    assert all(any(c.geofence_id == miss.geofence for c in scripted.found[d]) for d in others)
    _physical(scripted, miss)


def test_missed_waypoint_still_crosses_every_gate_and_zone(scripted: Run, plain: Run) -> None:
    miss = _one(scripted, MissFacts)

    def seen(run: Run) -> Counter[tuple[int, str]]:
        return Counter(
            (c.geofence_id, c.direction or c.transition)
            for c in run.found[miss.device_id]
            if c.stage_id == miss.stage and c.transition != "closest"
        )

    assert seen(scripted) == seen(plain)
    assert {g for g, _ in seen(scripted)} == {1, 3, 4, 6, 7}
    truth = _truth(scripted, miss.device_id, miss.stage)
    for c in scripted.found[miss.device_id]:
        if c.stage_id == miss.stage and c.transition != "closest":
            key = (c.geofence_id, c.direction or c.transition)
            assert abs(c.crossed_at_ms - truth[key]) <= ENGINE_S * 1000


def test_a_waypoint_that_cannot_be_avoided_is_refused(event: SampleEvent) -> None:
    """Waypoint 5 lies inside the SS1 speed zone: a 120 m detour would leave it."""
    inside = Scenario(entry=1, stage=1, action=MissWaypoint(geofence=5))
    with pytest.raises(ValueError, match="waypoint 5"):
        Simulation(event, GeneratorConfig(devices=1, scenarios=(inside,)))


# --- offline --------------------------------------------------------------------------


def test_offline_records_arrive_at_upload_time_with_their_own_timestamps(scripted: Run) -> None:
    off = _one(scripted, OfflineFacts)
    assert off.from_ms < off.finish_ms < off.upload_at_ms
    mine = [e for e in scripted.entries if e.device_id == off.device_id]
    late = [e for e in mine if e.offline]
    assert len(late) == off.records > 60
    assert [e.ts_ms for e in late] == sorted((e.ts_ms for e in late), reverse=True)
    assert (late[-1].ts_ms, late[0].ts_ms) == (off.first_ts_ms, off.last_ts_ms)
    assert all(off.from_ms <= e.ts_ms < off.upload_at_ms for e in late)
    assert late[0].received_ms == off.upload_at_ms
    assert late[-1].received_ms == off.last_received_ms
    for entry in late:
        pos = decode_entry(f"{entry.received_ms}-0", entry.fields())
        assert isinstance(pos, Position)
        assert (pos.ts_ms, pos.received_at_ms) == (entry.ts_ms, entry.received_ms)
    quiet = [e for e in mine if off.from_ms + 1000 < e.received_ms < off.upload_at_ms]
    assert not quiet


def test_offline_keeps_the_truth_and_the_engine_finds_the_finish(scripted: Run, plain: Run) -> None:
    off = _one(scripted, OfflineFacts)
    mine = [r for r in scripted.truth if r.device_id == off.device_id]
    assert mine == [r for r in plain.truth if r.device_id == off.device_id]
    finish = next(
        c.crossed_at_ms
        for c in scripted.found[off.device_id]
        if c.stage_id == off.stage and c.kind == "finish_line"
    )
    assert abs(finish - off.finish_ms) <= ENGINE_S * 1000


def test_offline_upload_before_the_leg_ends_resumes_live(event: SampleEvent) -> None:
    off = Offline(before_finish_s=20.0, upload_after_finish_s=5.0)
    sim = Simulation(
        event, GeneratorConfig(devices=2, scenarios=(Scenario(device=1, stage=3, action=off),))
    )
    facts = scenarios.expected(sim)[0]
    assert isinstance(facts, OfflineFacts)
    entries = list(sim.entries())
    assert [e.received_ms for e in entries] == sorted(e.received_ms for e in entries)
    mine = [e for e in entries if e.device_id == facts.device_id]
    late = [e for e in mine if e.offline]
    assert len(late) == facts.records == 25
    assert [e.ts_ms for e in late] == sorted(e.ts_ms for e in late)  # oldest-first
    assert {e.received_ms for e in late} == {facts.upload_at_ms}
    after = [e for e in mine if e.ts_ms >= facts.upload_at_ms]  # SS3 is the last leg
    assert len(after) > 20
    assert not any(e.offline for e in after)
    assert all(e.ts_ms < e.received_ms < e.ts_ms + 1000 for e in after)


# --- the whole run --------------------------------------------------------------------


def test_engine_agrees_with_the_scripted_truth(scripted: Run) -> None:
    run = accuracy.Run(0.0, scripted.fixes, scripted.truth)
    comp = accuracy.compare(run, scripted.found)
    assert not comp.missed
    assert not comp.phantom
    assert max(comp.errors_s["gate"]) <= ENGINE_S
    assert len(comp.errors_s["gate"]) == DEVICES * 12


def test_unscripted_cars_are_unchanged(scripted: Run, plain: Run) -> None:
    free = scripted.sim.plans[4].device_id
    assert [e for e in scripted.entries if e.device_id == free] == [
        e for e in plain.entries if e.device_id == free
    ]
    stop = _one(scripted, StopFacts)  # the stopping car's other stages: same positions

    def track(run: Run) -> list[tuple[int, float, float, float | None]]:
        later = _leg(run, stop).last_ms + 60_000
        return [
            (p.ts_ms, p.latitude, p.longitude, p.speed)
            for p in run.fixes[stop.device_id]
            if p.ts_ms > later
        ]

    assert len(track(plain)) > 500

    assert track(scripted) == track(plain)


def test_combined_scenarios_on_one_leg(event: SampleEvent) -> None:
    leg = (
        Stop(fraction=0.2, duration_s=45.0),
        Speeding(over_kmh=20.0, duration_s=5.0),
        MissWaypoint(geofence=9),
    )
    script = tuple(Scenario(entry=2, stage=2, action=a) for a in leg)
    sim = Simulation(event, GeneratorConfig(devices=2, scenarios=script))
    stop, fast, miss = scenarios.expected(sim)
    assert isinstance(stop, StopFacts)
    assert isinstance(fast, SpeedingFacts)
    assert isinstance(miss, MissFacts)
    assert stop.moving_at_ms - stop.stopped_at_ms == pytest.approx(45_000.0, abs=1e-3)
    assert fast.plateau_to_ms - fast.plateau_from_ms == pytest.approx(5_000.0, abs=1e-3)
    assert fast.max_speed_kmh == pytest.approx(70.0, abs=1e-6)
    assert not miss.visited
    truth = {r.geofence: r for r in ground_truth.compute(sim) if r.device_id == stop.device_id}
    assert truth[9].within_radius is False
    for gate in stop.later_gates:
        assert truth[gate.geofence].exact_ms == pytest.approx(gate.exact_ms, abs=1e-3)


# --- API and CLI ----------------------------------------------------------------------


def test_facts_round_trip_as_json(scripted: Run) -> None:
    raw = msgspec.json.encode(scripted.facts)
    assert msgspec.json.decode(raw, type=list[AnyFacts]) == scripted.facts
    assert [d["scenario"] for d in msgspec.json.decode(raw)] == [
        "stop",
        "speeding",
        "miss-waypoint",
        "offline",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "stop:entry=2,stage=1,fraction=0.5,duration=120",
            Scenario(entry=2, stage=1, action=Stop(fraction=0.5, duration_s=120.0)),
        ),
        (
            "speeding:device=7,stage=2,over=15,duration=10,tolerance=3",
            Scenario(
                device=7,
                stage=2,
                action=Speeding(over_kmh=15.0, duration_s=10.0, tolerance_kmh=3.0),
            ),
        ),
        (
            "miss-waypoint:entry=3,stage=1,waypoint=2,margin=40",
            Scenario(entry=3, stage=1, action=MissWaypoint(geofence=2, margin_m=40.0)),
        ),
        (
            "offline:entry=4,stage=2,before-finish=30,upload-after=90,order=newest-first",
            Scenario(
                entry=4,
                stage=2,
                action=Offline(
                    before_finish_s=30.0, upload_after_finish_s=90.0, order="newest-first"
                ),
            ),
        ),
    ],
)
def test_text_form_parses(text: str, expected: Scenario) -> None:
    assert scenarios.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "jump:entry=1,stage=1",
        "stop:entry=1,fraction=0.5",
        "stop:entry=1,stage=1,fractoin=0.5",
        "stop:entry=1,stage=one",
        "offline:entry=1,stage=1,order=sideways",
        "stop:entry=1,stage=1,fraction",
    ],
)
def test_text_form_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match=r"scenario|order"):
        scenarios.parse(text)


@pytest.mark.parametrize(
    ("scenario", "reason"),
    [
        (Scenario(entry=99, stage=1, action=Stop(fraction=0.5)), "no entry 99"),
        (Scenario(entry=3, stage=1, action=Stop(fraction=0.5)), "not in a run of 2"),
        (Scenario(device=0, entry=1, stage=1, action=Stop(fraction=0.5)), "exactly one"),
        (Scenario(entry=1, stage=9, action=Stop(fraction=0.5)), "no stage 9"),
        (Scenario(entry=1, stage=1, action=Stop(fraction=0.999)), "between start and finish"),
        (Scenario(entry=1, stage=1, action=Stop()), "fraction or at_m"),
        (Scenario(entry=1, stage=1, action=Stop(at_m=20.0, threshold_kmh=90.0)), "never"),
        (Scenario(entry=1, stage=3, action=Speeding()), "no speed zone"),
        (Scenario(entry=1, stage=1, action=Speeding(duration_s=120.0)), "does not fit"),
        (Scenario(entry=1, stage=1, action=Offline(from_ms=10, upload_at_ms=5)), "upload"),
    ],
)
def test_impossible_scenarios_are_refused(
    event: SampleEvent, scenario: Scenario, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        Simulation(event, GeneratorConfig(devices=2, scenarios=(scenario,)))


def test_cli_scenario_facts_go_into_the_ground_truth_file(tmp_path: Path) -> None:
    out = tmp_path / "truth.json"
    args = ["--dry-run", "--devices", "3", "--ground-truth", str(out)]
    script = ["--scenario", "stop:entry=2,stage=1,fraction=0.5,duration=120"]
    script += ["--scenario", "offline:entry=3,stage=3"]
    result = CliRunner().invoke(app, [*args, *script])
    assert result.exit_code == 0, result.output
    doc = msgspec.json.decode(out.read_bytes())
    assert [f["scenario"] for f in doc["scenarios"]] == ["stop", "offline"]
    assert doc["scenarios"][0]["duration_s"] == 120.0
    assert ground_truth.read(out)


def test_cli_rejects_a_bad_scenario() -> None:
    result = CliRunner().invoke(app, ["--dry-run", "--scenario", "stop:entry=1"])
    assert result.exit_code != 0
