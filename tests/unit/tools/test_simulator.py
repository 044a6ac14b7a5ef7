"""The simulator: reproducible, contract-valid entries; honest faults; exact ground truth."""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from processor.core.contract import decode_entry
from processor.core.position import Position, Rejection
from processor.core.timeparse import format_ms
from processor.tools.simulator import ground_truth
from processor.tools.simulator.cli import app
from processor.tools.simulator.event import (
    EventError,
    LineString,
    Point,
    Polygon,
    SampleEvent,
    default_event_path,
    load_event,
    parse_event,
)
from processor.tools.simulator.faults import FaultConfig
from processor.tools.simulator.generator import Entry, GeneratorConfig, Simulation
from processor.tools.simulator.geo import XY, point_in_polygon, point_segment, side
from processor.tools.simulator.records import IsoFormatter
from processor.tools.simulator.sample_builder import example_path
from processor.tools.simulator.schedule import LegPlan, imei
from processor.tools.simulator.sink import Pace
from processor.tools.simulator.trajectory import MAX_STAGE_SPEED_MS, MIN_STAGE_SPEED_MS

ALL_FAULTS = FaultConfig(
    duplicate_rate=0.05,
    offline_rate=0.1,
    offline_burst_s=(5.0, 15.0),
    dropout_rate=0.05,
    nofix_rate=0.05,
    malformed_rate=0.02,
)
GATES = ("start_line", "split_line", "finish_line")


@pytest.fixture(scope="module")
def event() -> SampleEvent:
    return load_event()


@pytest.fixture(scope="module")
def clean(event: SampleEvent) -> tuple[Simulation, list[Entry]]:
    """The sample event at 1 Hz, no noise, no faults."""
    sim = Simulation(event, GeneratorConfig(seed=5))
    return sim, list(sim.entries())


@pytest.fixture(scope="module")
def faulty(event: SampleEvent) -> tuple[Simulation, list[Entry]]:
    sim = Simulation(event, GeneratorConfig(devices=60, seed=9, noise_m=3.0, faults=ALL_FAULTS))
    return sim, list(sim.entries())


@pytest.fixture(scope="module")
def truth(clean: tuple[Simulation, list[Entry]]) -> list[ground_truth.TruthRecord]:
    return ground_truth.compute(clean[0])


def _decode(entry: Entry) -> Position | Rejection:
    return decode_entry(f"{entry.received_ms}-0", entry.fields())


def _positions(entries: list[Entry]) -> dict[str, list[Position]]:
    """Each device's valid fixes, by GPS time, duplicates dropped."""
    fixes: dict[str, dict[int, Position]] = defaultdict(dict)
    for entry in entries:
        pos = _decode(entry)
        if isinstance(pos, Position) and pos.fix_valid:
            fixes[pos.device_id].setdefault(pos.ts_ms, pos)
    return {dev: [by_ts[t] for t in sorted(by_ts)] for dev, by_ts in fixes.items()}


def _leg(sim: Simulation, record: ground_truth.TruthRecord) -> LegPlan:
    plan = next(p for p in sim.plans if p.device_id == record.device_id)
    return plan.legs[record.leg]


def _xy(sim: Simulation, coords: list[tuple[float, float]]) -> list[XY]:
    return sim.course.xy(coords)


# --- the sample event ----------------------------------------------------------------


def test_sample_event_has_the_expected_shape(event: SampleEvent) -> None:
    assert len(event.stages) == 3
    assert len(event.entries) == len(event.devices) == 20
    kinds = Counter(g.kind for g in event.geofences)
    assert kinds["start_line"] == kinds["finish_line"] == 3
    assert kinds["split_line"] >= 3
    assert kinds["speed_zone"] >= 1
    assert kinds["waypoint"] >= 3
    assert all(d.model == "FMB920" and len(d.imei) == 15 for d in event.devices)
    assert default_event_path().stat().st_size < 300_000


def test_example_copy_is_identical_to_package_data() -> None:
    example = example_path()
    if not example.exists():
        pytest.skip("not a source checkout")
    assert example.read_bytes() == default_event_path().read_bytes()


def test_gates_are_30_m_lines_crossed_once_forward(clean: tuple[Simulation, list[Entry]]) -> None:
    sim = clean[0]
    for stage in sim.course.stages:
        assert stage.gates[0].fence.kind == "start_line"
        assert stage.gates[-1].fence.kind == "finish_line"
        assert all(h.forward for h in stage.gates)
        for hit in stage.gates:
            assert isinstance(hit.fence.geometry, LineString)
            a, b = _xy(sim, hit.fence.geometry.coordinates)
            assert math.dist(a, b) == pytest.approx(30.0, abs=0.01)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("geofences", 0, "geometry"), {"type": "Point", "coordinates": [25.2, 54.6]}),
        (("geofences", 0, "direction"), None),
        (("entries", 1, "device"), 1),
        (("stages", 0, "closes_at"), "2026-05-01T05:00:00.000Z"),
        (("devices", 0, "imei"), "12345"),
        (("format",), "something/else"),
    ],
)
def test_inconsistent_event_files_are_rejected(path: tuple[str | int, ...], value: object) -> None:
    doc = msgspec.json.decode(default_event_path().read_bytes())
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(EventError):
        parse_event(msgspec.json.encode(doc))


# --- entries ------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_entries(event: SampleEvent) -> None:
    def run(seed: int) -> list[tuple[int, dict[bytes, bytes]]]:
        config = GeneratorConfig(devices=30, seed=seed, noise_m=2.0, faults=ALL_FAULTS)
        entries = Simulation(event, config).entries()
        return [(e.received_ms, e.fields()) for e in itertools.islice(entries, 3000)]

    first = run(11)
    assert first == run(11)
    assert first != run(12)


def test_entries_arrive_in_received_order(faulty: tuple[Simulation, list[Entry]]) -> None:
    received = [e.received_ms for e in faulty[1]]
    assert received == sorted(received)


def test_valid_entries_decode_to_what_was_generated(
    faulty: tuple[Simulation, list[Entry]],
) -> None:
    checked = 0
    for entry in faulty[1]:
        if entry.rejection is not None:
            continue
        pos = _decode(entry)
        assert isinstance(pos, Position), pos
        assert (pos.device_id, pos.ts_ms, pos.received_at_ms) == (
            entry.device_id,
            entry.ts_ms,
            entry.received_ms,
        )
        assert pos.fix_valid is not entry.nofix
        assert pos.codec == "8E"
        assert isinstance(pos.io["11"], int)
        assert pos.io["11"] > 2**53
        assert isinstance(pos.io["16"], int)
        checked += 1
    assert checked > 30_000


def test_byte_values_are_buffers(clean: tuple[Simulation, list[Entry]]) -> None:
    decoded = [_decode(e) for e in clean[1][:2000]]
    found = [p.io["385"] for p in decoded if isinstance(p, Position) and "385" in p.io]
    assert found
    assert all(isinstance(v, bytes) and len(v) == 12 for v in found)


def test_malformed_entries_are_rejected_for_the_stated_reason(
    faulty: tuple[Simulation, list[Entry]],
) -> None:
    reasons: Counter[str] = Counter()
    for entry in faulty[1]:
        if entry.rejection is None:
            continue
        result = _decode(entry)
        assert isinstance(result, Rejection), entry
        assert result.reason == entry.rejection, (entry, result)
        reasons[result.reason] += 1
    assert len(reasons) >= 7  # a real mix of contract violations


def test_epoch_ms_time_format_decodes(event: SampleEvent) -> None:
    sim = Simulation(event, GeneratorConfig(devices=3, time_format="epoch-ms"))
    for entry in itertools.islice(sim.entries(), 200):
        assert b'"timestamp":' + str(entry.ts_ms).encode() in entry.payload
        assert isinstance(_decode(entry), Position)


def test_device_ids_are_unique_luhn_imeis(event: SampleEvent) -> None:
    sim = Simulation(event, GeneratorConfig(devices=2000))
    ids = [p.device_id for p in sim.plans]
    assert len(set(ids)) == 2000
    for device_id in ids:
        assert len(device_id) == 15
        assert device_id.isdigit()
        assert imei(int(device_id[8:14])) == device_id
    assert {d.imei for d in event.devices} <= set(ids)


def test_load_devices_join_part_way_or_start_from_the_line(event: SampleEvent) -> None:
    entries = len(event.entries)
    for where in ("part_way", "start_line"):
        config = GeneratorConfig(devices=entries + 40, start_interval_s=30.0, extras_start=where)
        sim = Simulation(event, config)
        for plan in sim.plans[entries:]:
            for leg in plan.legs:
                stage = leg.course.stage
                first_go = stage.opens_at_ms + 60_000  # the schedule's first start
                if where == "start_line":
                    # At the line, waiting a minute (the lead-in), gone within the interval.
                    assert leg.s_start == 0.0
                    assert first_go <= leg.trajectory.t_go_ms <= first_go + 30_000
                    assert leg.first_ms >= leg.trajectory.t_go_ms - 61_000
                else:
                    assert leg.s_start > 0.0
                    assert leg.trajectory.t_go_ms < first_go  # started before it is seen


def test_iso_formatter_matches_the_contract_rendering() -> None:
    fmt = IsoFormatter()
    for ms in (0, 1_777_629_600_000, 1_777_629_600_999, 1_777_629_659_001, 1_799_999_999_999):
        assert fmt(ms) == format_ms(ms)


# --- the vehicle model --------------------------------------------------------------


def test_speed_on_stage_is_40_to_180_kmh(clean: tuple[Simulation, list[Entry]]) -> None:
    sim, entries = clean
    positions = _positions(entries)
    checked = 0
    for plan in sim.plans:
        for leg in plan.legs:
            traj, gates = leg.trajectory, leg.course.gates
            t_from = traj.time_at(gates[0].s + 60.0)  # after the standing start
            t_to = traj.time_at(gates[-1].s)
            for pos in positions[plan.device_id]:
                if t_from <= pos.ts_ms <= t_to:
                    assert pos.speed is not None
                    assert 40.0 <= pos.speed <= 180.0
                    state = traj.state(pos.ts_ms)
                    assert MIN_STAGE_SPEED_MS - 1e-9 <= state[3] <= MAX_STAGE_SPEED_MS + 1e-9
                    checked += 1
    assert checked > 5_000


def test_profile_closed_forms_are_consistent(clean: tuple[Simulation, list[Entry]]) -> None:
    leg = clean[0].plans[3].legs[1]
    traj, profile = leg.trajectory, leg.trajectory.profile
    sampler = traj.sampler()
    previous = None
    for k in range(0, int(profile.duration * 1000), 137):
        t = traj.t_go_ms + k
        x, y, _, v, s = traj.state(t)
        assert sampler.at(t) == (x, y, traj.state(t)[2], v, s)
        assert traj.time_at(s) == pytest.approx(t, abs=1e-3)
        if previous is not None:  # continuous, and accelerations stay physical
            assert s >= previous[0]
            assert abs(v - previous[1]) <= 0.137 * 10.0
        previous = (s, v)


# --- faults -------------------------------------------------------------------------


def test_fault_rates_are_roughly_honoured(faulty: tuple[Simulation, list[Entry]]) -> None:
    sim, entries = faulty
    records = sim.counters.records
    sent = records - sim.counters.dropouts
    originals = [e for e in entries if not e.duplicate]
    assert sim.counters.dropouts / records == pytest.approx(0.05, rel=0.2)
    assert sum(e.duplicate for e in entries) / sent == pytest.approx(0.05, rel=0.3)
    assert sum(e.offline for e in originals) / sent == pytest.approx(0.1, rel=0.35)
    assert sum(e.nofix for e in originals) / sent == pytest.approx(0.05, rel=0.3)
    assert sum(e.rejection is not None for e in originals) / sent == pytest.approx(0.02, rel=0.3)
    assert len(originals) == sent


def test_duplicates_repeat_a_record_later(faulty: tuple[Simulation, list[Entry]]) -> None:
    first: dict[tuple[str, int], Entry] = {}
    for entry in faulty[1]:
        key = (entry.device_id, entry.ts_ms)
        if entry.duplicate:
            original = first[key]
            assert original.received_ms < entry.received_ms
            a, b = msgspec.json.decode(original.payload), msgspec.json.decode(entry.payload)
            assert a.pop("received_at") != b.pop("received_at")
            assert a == b
        else:
            first.setdefault(key, entry)


@pytest.mark.parametrize("order", ["oldest-first", "newest-first"])
def test_offline_buffers_upload_late_in_the_chosen_order(event: SampleEvent, order: str) -> None:
    faults = FaultConfig(offline_rate=0.2, offline_order=order)  # type: ignore[arg-type]
    sim = Simulation(event, GeneratorConfig(devices=10, seed=3, faults=faults))
    runs: dict[str, list[list[Entry]]] = defaultdict(list)
    last_offline: dict[str, bool] = {}
    for entry in sim.entries():
        if entry.offline and last_offline.get(entry.device_id):
            runs[entry.device_id][-1].append(entry)
        elif entry.offline:
            runs[entry.device_id].append([entry])
        last_offline[entry.device_id] = entry.offline
    uploads = [run for device_runs in runs.values() for run in device_runs if len(run) > 5]
    assert len(uploads) >= 5
    for run in uploads:
        stamps = [e.ts_ms for e in run]
        assert stamps == sorted(stamps, reverse=order == "newest-first")
        assert min(e.received_ms for e in run) > max(stamps)


# --- ground truth -------------------------------------------------------------------


def test_truth_covers_every_gate_of_every_car(
    clean: tuple[Simulation, list[Entry]], truth: list[ground_truth.TruthRecord]
) -> None:
    sim = clean[0]
    gates = Counter((r.device_id, r.stage) for r in truth if r.kind in GATES)
    assert len(gates) == len(sim.plans) * len(sim.course.stages)
    assert all(count == 4 for count in gates.values())
    for record in truth:
        assert record.crossed_at == format_ms(record.crossed_at_ms)
        assert abs(record.exact_ms - record.crossed_at_ms) <= 0.5


def test_gate_crossing_lies_on_the_gate_and_changes_side(
    clean: tuple[Simulation, list[Entry]], truth: list[ground_truth.TruthRecord]
) -> None:
    sim = clean[0]
    fences = {g.id: g for g in sim.event.geofences}
    for record in (r for r in truth if r.kind in GATES):
        geometry = fences[record.geofence].geometry
        assert isinstance(geometry, LineString)
        a, b = _xy(sim, geometry.coordinates)
        traj = _leg(sim, record).trajectory
        x, y, *_ = traj.state(record.exact_ms)
        assert point_segment((x, y), a, b)[0] < 1e-3
        before = traj.state(record.exact_ms - 200.0)
        after = traj.state(record.exact_ms + 200.0)
        assert side(a, b, before[:2]) < 0.0 < side(a, b, after[:2])  # forward: right → left
        assert record.direction == "forward"
        lon, lat = sim.course.projection.to_lonlat(x, y)
        assert (lon, lat) == pytest.approx((record.longitude, record.latitude), abs=1e-8)


def test_zone_crossings_lie_on_the_boundary(
    clean: tuple[Simulation, list[Entry]], truth: list[ground_truth.TruthRecord]
) -> None:
    sim = clean[0]
    fences = {g.id: g for g in sim.event.geofences}
    zones = [r for r in truth if r.kind in ("speed_zone", "zone")]
    assert {r.transition for r in zones} == {"entry", "exit"}
    for record in zones:
        geometry = fences[record.geofence].geometry
        assert isinstance(geometry, Polygon)
        ring = _xy(sim, geometry.coordinates[0])
        traj = _leg(sim, record).trajectory
        x, y, *_ = traj.state(record.exact_ms)
        edge = min(point_segment((x, y), p, q)[0] for p, q in itertools.pairwise(ring))
        assert edge < 1e-3
        inside_after = point_in_polygon(traj.state(record.exact_ms + 200.0)[:2], ring)
        assert inside_after is (record.transition == "entry")
        if record.kind == "speed_zone" and record.transition == "exit":
            assert record.visit_max_speed_kmh is not None
            assert record.visit_over_limit_ms is not None
            speeding = record.visit_max_speed_kmh > (record.speed_limit_kmh or 0.0)
            assert speeding is (record.visit_over_limit_ms > 0)


def test_speed_zone_has_speeders_and_law_abiding_cars(
    truth: list[ground_truth.TruthRecord],
) -> None:
    exits = [r for r in truth if r.kind == "speed_zone" and r.transition == "exit"]
    over = [r.visit_over_limit_ms or 0 for r in exits]
    assert any(ms > 10_000 for ms in over)
    assert any(ms == 0 for ms in over)


def test_waypoint_truth_is_the_closest_approach(
    clean: tuple[Simulation, list[Entry]], truth: list[ground_truth.TruthRecord]
) -> None:
    sim = clean[0]
    fences = {g.id: g for g in sim.event.geofences}
    waypoints = [r for r in truth if r.kind == "waypoint"]
    assert waypoints
    for record in waypoints:
        geometry = fences[record.geofence].geometry
        assert isinstance(geometry, Point)
        centre = sim.course.projection.to_xy(*geometry.coordinates)
        traj = _leg(sim, record).trajectory
        assert record.distance_m is not None
        assert record.radius_m is not None

        def dist(t: float) -> float:
            x, y, *_ = traj.state(t)  # noqa: B023 - used within this iteration
            return math.dist((x, y), centre)  # noqa: B023

        assert dist(record.exact_ms) == pytest.approx(record.distance_m, abs=1e-3)
        assert dist(record.exact_ms - 300.0) > dist(record.exact_ms)
        assert dist(record.exact_ms + 300.0) > dist(record.exact_ms)
        assert record.within_radius is (record.distance_m <= record.radius_m)


def test_interpolating_1hz_fixes_lands_within_100_ms(
    clean: tuple[Simulation, list[Entry]], truth: list[ground_truth.TruthRecord]
) -> None:
    """What the timing domain will do: cut the segment between the bracketing fixes."""
    sim, entries = clean
    positions = _positions(entries)
    to_xy = sim.course.projection.to_xy
    fences = {g.id: g for g in sim.event.geofences}
    worst = 0.0
    for record in (r for r in truth if r.kind in GATES):
        geometry = fences[record.geofence].geometry
        assert isinstance(geometry, LineString)
        a, b = _xy(sim, geometry.coordinates)
        fixes = positions[record.device_id]
        after = next(i for i, p in enumerate(fixes) if p.ts_ms > record.exact_ms)
        p, q = fixes[after - 1], fixes[after]
        assert q.ts_ms - p.ts_ms == 1000
        side_p = side(a, b, to_xy(p.longitude, p.latitude))
        side_q = side(a, b, to_xy(q.longitude, q.latitude))
        assert side_p < 0.0 < side_q
        t = p.ts_ms + side_p / (side_p - side_q) * 1000.0
        worst = max(worst, abs(t - record.exact_ms))
    assert worst < 100.0


def test_truncated_truth_stops_at_each_devices_last_fix(
    clean: tuple[Simulation, list[Entry]],
) -> None:
    sim, entries = clean
    last: dict[str, int] = {}
    for entry in entries[:5000]:
        last[entry.device_id] = max(last.get(entry.device_id, 0), entry.ts_ms)
    clipped = ground_truth.compute(sim, last)
    assert clipped
    assert all(r.exact_ms <= last[r.device_id] for r in clipped)
    assert len(clipped) < len(ground_truth.compute(sim))


def test_truth_file_round_trips(
    tmp_path: Path, clean: tuple[Simulation, list[Entry]], truth: list[ground_truth.TruthRecord]
) -> None:
    path = tmp_path / "truth.json"
    ground_truth.write(path, clean[0], truth, truncated=False)
    doc = msgspec.json.decode(path.read_bytes())
    assert doc["format"] == ground_truth.FORMAT
    assert doc["count"] == len(truth)
    assert doc["records"][0]["crossed_at"].endswith("Z")
    assert ground_truth.read(path) == truth


# --- command line -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "factor"),
    [("max", None), ("realtime", 1.0), ("x10", 10.0), ("10x", 10.0), ("2.5", 2.5)],
)
def test_pace_parses(text: str, factor: float | None) -> None:
    assert Pace.parse(text).factor == factor


@pytest.mark.parametrize("text", ["fast", "x0", "-3", ""])
def test_pace_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="speed"):
        Pace.parse(text)


def test_cli_dry_run_writes_ground_truth(tmp_path: Path) -> None:
    out = tmp_path / "truth.json"
    args = ["--dry-run", "--devices", "50", "--max-entries", "3000", "--ground-truth", str(out)]
    result = CliRunner().invoke(app, [*args, "--malformed-rate", "0.01", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "3,000" in result.output
    doc = msgspec.json.decode(out.read_bytes())
    assert doc["truncated"] is True
    assert doc["devices"] == 50


def test_cli_rejects_a_bad_start_time() -> None:
    result = CliRunner().invoke(app, ["--dry-run", "--start-at", "yesterday"])
    assert result.exit_code != 0
