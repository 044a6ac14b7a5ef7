"""The engine against the simulator's exact ground truth on the sample event
(20 devices, 1 Hz, all three stages) and on the kart course (tight hairpins, bends,
kart acceleration). Error tables: `python -m tests.unit.domain.accuracy`.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator

import msgspec
import pytest

from processor.core.contract import decode_entry
from processor.core.position import Position
from processor.domain.geofences import GeofenceIndex
from processor.domain.interpolation import Method, heading_change
from processor.domain.timing import (
    DEFAULT_SETTINGS,
    Crossing,
    TimingSettings,
    context_span,
    recompute_window,
)
from processor.tools.simulator import ground_truth
from processor.tools.simulator.event import SampleEvent, load_event
from processor.tools.simulator.faults import FaultConfig
from processor.tools.simulator.generator import GeneratorConfig, Simulation
from processor.tools.simulator.kart import kart_event
from tests.unit.domain.accuracy import (
    GEOMETRIES,
    METHODS,
    Comparison,
    Run,
    compare,
    crossings,
    geometry,
    geometry_table,
    index_of,
    simulate,
    summary,
    table,
)

NOISES = (0.0, 1.0, 3.0)
KART_NOISES = (0.0, 1.0)


@pytest.fixture(scope="module")
def event() -> SampleEvent:
    return load_event()


@pytest.fixture(scope="module")
def index(event: SampleEvent) -> GeofenceIndex:
    return index_of(event)


@pytest.fixture(scope="module")
def runs(event: SampleEvent) -> dict[float, Run]:
    return {noise: simulate(event, noise) for noise in NOISES}


@pytest.fixture(scope="module")
def found(
    runs: dict[float, Run], index: GeofenceIndex
) -> dict[tuple[float, Method], dict[str, list[Crossing]]]:
    return {(n, m): crossings(runs[n], index, m) for n in NOISES for m in METHODS}


@pytest.fixture(scope="module")
def compared(
    runs: dict[float, Run], found: dict[tuple[float, Method], dict[str, list[Crossing]]]
) -> dict[tuple[float, Method], Comparison]:
    return {key: compare(runs[key[0]], result) for key, result in found.items()}


@pytest.fixture(scope="module")
def kart() -> SampleEvent:
    return kart_event()


@pytest.fixture(scope="module")
def kart_index(kart: SampleEvent) -> GeofenceIndex:
    return index_of(kart)


@pytest.fixture(scope="module")
def kart_runs(kart: SampleEvent) -> dict[float, Run]:
    return {noise: simulate(kart, noise) for noise in KART_NOISES}


@pytest.fixture(scope="module")
def kart_found(
    kart_runs: dict[float, Run], kart_index: GeofenceIndex
) -> dict[tuple[float, Method], dict[str, list[Crossing]]]:
    return {(n, m): crossings(kart_runs[n], kart_index, m) for n in KART_NOISES for m in METHODS}


@pytest.fixture(scope="module")
def kart_compared(
    kart_runs: dict[float, Run],
    kart_found: dict[tuple[float, Method], dict[str, list[Crossing]]],
) -> dict[tuple[float, Method], Comparison]:
    return {key: compare(kart_runs[key[0]], result) for key, result in kart_found.items()}


def test_noiseless_1hz_gate_times_within_20_ms(
    compared: dict[tuple[float, Method], Comparison],
) -> None:
    speed, linear = compared[0.0, "speed"], compared[0.0, "linear"]
    assert len(speed.errors_s["gate"]) == 20 * 12
    _, p95, top = summary(speed.errors_s["gate"])
    assert p95 <= 0.02
    assert top <= 0.02
    # Linear misses the target: it ignores the acceleration off the start line.
    assert summary(linear.errors_s["gate"])[1] > 0.02
    assert not speed.missed
    assert not speed.phantom


def test_noisy_1hz_gate_times_and_no_missed_or_phantom_crossings(
    compared: dict[tuple[float, Method], Comparison],
) -> None:
    comp = compared[1.0, "speed"]
    _, p95, top = summary(comp.errors_s["gate"])
    assert p95 <= 0.10
    assert top <= 0.30
    # Gates by (device, gate, direction); zones by entry/exit; validated waypoints.
    assert not comp.missed
    assert not comp.phantom
    assert {len(v) for v in comp.errors_s.values()} == {240, 120}


def test_speed_model_beats_linear_at_every_noise_level(
    compared: dict[tuple[float, Method], Comparison],
) -> None:
    for noise in NOISES:
        speed = summary(compared[noise, "speed"].errors_s["gate"])
        linear = summary(compared[noise, "linear"].errors_s["gate"])
        assert speed[1] < linear[1], noise


def test_error_table(compared: dict[tuple[float, Method], Comparison]) -> None:
    text = table((m, n, compared[n, m]) for n in NOISES for m in METHODS)
    print("\n" + text)
    assert text.count("\n") == 1 + len(NOISES) * len(METHODS) * 3


def test_kart_course_has_hairpins_bends_and_straights_and_every_gate_is_found(
    kart_found: dict[tuple[float, Method], dict[str, list[Crossing]]],
    kart_compared: dict[tuple[float, Method], Comparison],
) -> None:
    """The case the sample event lacks: gates where the heading turns 45–135° between
    two 1 Hz fixes, and where karts brake and accelerate hard."""
    for key, comp in kart_compared.items():
        assert not comp.missed, key
        assert not comp.phantom, key
        assert {g: len(v) >= 150 for g, v in comp.gate_errors_s.items()} == dict.fromkeys(
            GEOMETRIES, True
        ), key
    turns = [
        abs(heading_change(c.before.heading, c.after.heading) or 0.0)
        for found in kart_found[0.0, "linear"].values()
        for c in found
    ]
    assert sum(turn >= 90.0 for turn in turns) >= 40
    speeds = [
        abs((c.after.speed_kmh or 0.0) - (c.before.speed_kmh or 0.0))
        for found in kart_found[0.0, "linear"].values()
        for c in found
        if geometry(c) == "straight"
    ]
    assert sum(change >= 15.0 for change in speeds) >= 40  # ≥ 15 km/h within a second


def test_speed_model_alone_is_worse_than_linear_in_hairpins(
    kart_compared: dict[tuple[float, Method], Comparison],
) -> None:
    """What real kart logs showed: constant acceleration along the chord misplaces the
    time where the chord is much shorter than the arc driven."""
    for noise in KART_NOISES:
        speed = summary(kart_compared[noise, "speed"].gate_errors_s["hairpin"])
        linear = summary(kart_compared[noise, "linear"].gate_errors_s["hairpin"])
        assert speed[1] > linear[1], noise
    speed = summary(kart_compared[0.0, "speed"].gate_errors_s["hairpin"])
    linear = summary(kart_compared[0.0, "linear"].gate_errors_s["hairpin"])
    assert speed[2] > linear[2]


def test_default_is_never_worse_than_linear_in_any_geometry(
    compared: dict[tuple[float, Method], Comparison],
    kart_compared: dict[tuple[float, Method], Comparison],
) -> None:
    """The per-crossing choice against linear, gate errors p95 and max, by the heading
    change between the bracketing fixes, on both events, at σ = 0 and 1 m. (The max at
    1 m is one crossing's noise: this holds for the harness's seed, not every seed.)"""
    checked = 0
    for results in (compared, kart_compared):
        for noise in KART_NOISES:
            auto, linear = results[noise, "auto"], results[noise, "linear"]
            assert set(auto.gate_errors_s) == set(linear.gate_errors_s)
            for name, errors in auto.gate_errors_s.items():
                _, p95, top = summary(errors)
                _, linear_p95, linear_top = summary(linear.gate_errors_s[name])
                assert p95 <= linear_p95, (noise, name)
                assert top <= linear_top, (noise, name)
                checked += 1
    assert checked == 2 * (1 + 3)  # the sample event's gates are all on straights


def test_default_strictly_beats_both_chord_models_in_hairpins_without_noise(
    kart_compared: dict[tuple[float, Method], Comparison],
) -> None:
    auto = summary(kart_compared[0.0, "auto"].gate_errors_s["hairpin"])
    for method in ("linear", "speed"):
        other = summary(kart_compared[0.0, method].gate_errors_s["hairpin"])
        assert auto[1] < other[1] / 2, method
        assert auto[2] < other[2], method


def test_default_records_the_model_it_used(
    kart_found: dict[tuple[float, Method], dict[str, list[Crossing]]],
) -> None:
    used = {(geometry(c), c.method) for found in kart_found[1.0, "auto"].values() for c in found}
    assert used == {("straight", "speed"), ("bend", "arc"), ("hairpin", "arc")}
    assert {c.method for f in kart_found[1.0, "speed"].values() for c in f} == {"speed"}


def test_geometry_error_table(kart_compared: dict[tuple[float, Method], Comparison]) -> None:
    text = geometry_table((m, n, kart_compared[n, m]) for n in KART_NOISES for m in METHODS)
    print("\n" + text)
    assert text.count("\n") == 1 + len(KART_NOISES) * len(METHODS) * len(GEOMETRIES)


def test_transfers_between_stages_are_not_interpolated(
    runs: dict[float, Run], index: GeofenceIndex
) -> None:
    """Between SS2 and SS3 a device is quiet for ~97 min; the straight line from its
    last SS2 fix to its first SS3 fix crosses the SS3 start (in reverse), the
    spectator zone and a waypoint's radius. The gap limit must drop that segment."""
    run = runs[0.0]
    no_limit = TimingSettings(max_gap_ms=10**9)
    for fixes in run.fixes.values():
        phantom = [
            c
            for c in recompute_window(fixes, index, settings=no_limit, include_rejected=True)
            if c.after.ts_ms - c.before.ts_ms > DEFAULT_SETTINGS.max_gap_ms
        ]
        assert {(c.geofence_id, c.status) for c in phantom} >= {(15, "wrong_direction")}
        default = recompute_window(fixes, index, include_rejected=True)
        assert all(c.after.ts_ms - c.before.ts_ms <= 1000 for c in default)


@pytest.fixture(scope="module")
def faulty(event: SampleEvent) -> Run:
    """Noisy run with duplicates, late offline uploads, no-fix bursts and dropouts, in
    arrival order (per device: not in time order, with repeats)."""
    faults = FaultConfig(duplicate_rate=0.05, offline_rate=0.1, nofix_rate=0.05, dropout_rate=0.02)
    sim = Simulation(event, GeneratorConfig(devices=20, seed=7, noise_m=1.0, faults=faults))
    by_device: dict[str, list[Position]] = {}
    for entry in sim.entries():
        decoded = decode_entry(f"{entry.received_ms}-0", entry.fields())
        assert isinstance(decoded, Position)
        by_device.setdefault(decoded.device_id, []).append(decoded)
    return Run(1.0, by_device, ground_truth.compute(sim))


def test_faulty_feed_still_finds_every_crossing_and_nothing_else(
    faulty: Run, index: GeofenceIndex
) -> None:
    """No-fix bursts and dropouts lengthen some segments to several seconds (larger
    errors there, see the report), but no crossing is missed or invented."""
    comp = compare(faulty, crossings(faulty, index, "speed"))
    assert not comp.missed
    assert not comp.phantom
    assert summary(comp.errors_s["gate"])[1] <= 0.15


def _encoded(found: list[Crossing]) -> bytes:
    return msgspec.json.encode(found)


def test_arrival_order_shuffles_and_windows_give_bit_identical_crossings(
    faulty: Run, index: GeofenceIndex
) -> None:
    rng = random.Random(11)
    total = 0
    for device, arrived in faulty.fixes.items():
        assert any(not p.fix_valid for p in arrived)
        whole = recompute_window(arrived, index, include_rejected=True)
        total += len(whole)
        shuffled = list(arrived)
        rng.shuffle(shuffled)
        assert _encoded(recompute_window(shuffled, index, include_rejected=True)) == _encoded(
            whole
        ), device
        windowed = list(_by_windows(arrived, index, rng))
        assert _encoded(windowed) == _encoded(whole), device
    assert total > 20 * 20


def _by_windows(
    arrived: list[Position], index: GeofenceIndex, rng: random.Random
) -> Iterator[Crossing]:
    """Tile the device's time range with windows of random length; each window gets
    only the fixes of its context span, in a random order."""
    ordered = sorted(arrived, key=lambda p: p.ts_ms)
    times = [p.ts_ms for p in ordered]
    start = times[0]
    while start <= times[-1]:
        end = start + rng.randrange(2_000, 120_000)
        lo, hi = context_span(start, end, DEFAULT_SETTINGS)
        fixes = ordered[bisect.bisect_left(times, lo) : bisect.bisect_right(times, hi)]
        rng.shuffle(fixes)
        yield from recompute_window(fixes, index, window=(start, end), include_rejected=True)
        start = end
