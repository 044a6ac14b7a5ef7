"""Engine vs the simulator's exact ground truth: shared by the accuracy tests, and a
script printing the error tables (`.venv/bin/python -m tests.unit.domain.accuracy`).

The simulator samples fixes from continuous trajectories and computes each crossing
on the trajectory itself (`ground_truth`), so the difference is the engine's error:
interpolation between fixes, GPS noise, rounding of the tracker's values (1e-7°,
integer km/h and degrees) and the millisecond rounding of `crossed_at_ms`.

Two events: the sample event (rally stages, gates mid-straight) and the kart course
(`simulator/kart.py`: gates in tight hairpins and bends, hard acceleration and
braking). Gate errors are also classed by the geometry at the gate: the heading
change between the two fixes that bracket the crossing (`geometry`).
"""

from __future__ import annotations

import math
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from processor.core.contract import decode_entry
from processor.core.position import Position
from processor.domain.config import config_from_event_file
from processor.domain.geofences import GeofenceIndex
from processor.domain.interpolation import Method, heading_change
from processor.domain.timing import Crossing, TimingSettings, recompute_window
from processor.tools.simulator import ground_truth
from processor.tools.simulator.event import SampleEvent, load_event
from processor.tools.simulator.generator import GeneratorConfig, Simulation
from processor.tools.simulator.kart import kart_event

DEVICES = 20
SEED = 1
METHODS: tuple[Method, ...] = ("linear", "speed", "auto")
Tag = tuple[str, int, str]  # (device, geofence, direction or transition)
# Geometry classes by the heading change between the bracketing fixes (degrees).
GEOMETRIES = ("straight", "bend", "hairpin")
BEND_FROM_DEG = 5.0
HAIRPIN_FROM_DEG = 45.0


@dataclass(frozen=True)
class Run:
    """One simulation: each device's decoded fixes (arrival order) and the truth."""

    noise_m: float
    fixes: dict[str, list[Position]]
    truth: list[ground_truth.TruthRecord]


def simulate(event: SampleEvent, noise_m: float, seed: int = SEED, rate_hz: float = 1.0) -> Run:
    config = GeneratorConfig(devices=DEVICES, seed=seed, noise_m=noise_m, rate_hz=rate_hz)
    sim = Simulation(event, config)
    fixes: dict[str, list[Position]] = defaultdict(list)
    for entry in sim.entries():
        decoded = decode_entry(f"{entry.received_ms}-0", entry.fields())
        assert isinstance(decoded, Position), decoded
        fixes[decoded.device_id].append(decoded)
    return Run(noise_m, dict(fixes), ground_truth.compute(sim))


def index_of(event: SampleEvent) -> GeofenceIndex:
    config, errors = config_from_event_file(event)
    assert not errors, errors
    return GeofenceIndex.from_config(config)


def crossings(run: Run, index: GeofenceIndex, method: Method) -> dict[str, list[Crossing]]:
    settings = TimingSettings(method=method)
    return {d: recompute_window(f, index, settings=settings) for d, f in run.fixes.items()}


def tag(c: Crossing) -> Tag:
    return (c.device_id, c.geofence_id, c.direction or c.transition)


def truth_tag(r: ground_truth.TruthRecord) -> Tag:
    return (r.device_id, r.geofence, r.direction or r.transition or "closest")


def closest_per_pass(found: Iterable[Crossing]) -> list[Crossing]:
    """Waypoints: the truth holds the single closest approach of each stage run; the
    engine reports every local minimum within the radius (a route may pass a
    waypoint twice, as SS3's hairpins do), so keep the closest per device and
    waypoint (each waypoint belongs to one stage, driven once per device)."""
    best: dict[tuple[str, int], Crossing] = {}
    for c in found:
        if c.transition != "closest":
            continue
        key = (c.device_id, c.geofence_id)
        if key not in best or (c.distance_m or 0.0) < (best[key].distance_m or 0.0):
            best[key] = c
    return list(best.values())


def geometry(c: Crossing) -> str:
    """`straight`, `bend` or `hairpin`: how far the heading turns between the two fixes
    bracketing the crossing (a straight when a heading is unknown)."""
    turn = abs(heading_change(c.before.heading, c.after.heading) or 0.0)
    if turn >= HAIRPIN_FROM_DEG:
        return "hairpin"
    return "bend" if turn >= BEND_FROM_DEG else "straight"


@dataclass(frozen=True)
class Comparison:
    errors_s: dict[str, list[float]]  # by family: gate, zone, waypoint
    missed: Counter[Tag]
    phantom: Counter[Tag]
    gate_errors_s: dict[str, list[float]]  # gates by geometry: straight, bend, hairpin


def compare(run: Run, found: Mapping[str, Sequence[Crossing]]) -> Comparison:
    """Errors against the truth, and the multiset differences of (device, geofence,
    direction/transition) for gates and zones and of validated waypoints."""
    flat = [c for cs in found.values() for c in cs]
    engine = [c for c in flat if c.transition != "closest"] + closest_per_pass(flat)
    truth = [r for r in run.truth if r.within_radius is not False]
    by_tag: dict[Tag, list[ground_truth.TruthRecord]] = defaultdict(list)
    for r in truth:
        by_tag[truth_tag(r)].append(r)
    errors: dict[str, list[float]] = defaultdict(list)
    by_geometry: dict[str, list[float]] = defaultdict(list)
    for c in engine:
        candidates = by_tag.get(tag(c), [])
        if candidates:
            best = min(abs(c.crossed_at_ms - r.exact_ms) for r in candidates) / 1000.0
            errors[family(c)].append(best)
            if family(c) == "gate":
                by_geometry[geometry(c)].append(best)
    engine_tags = Counter(tag(c) for c in engine)
    truth_tags = Counter(truth_tag(r) for r in truth)
    return Comparison(
        dict(errors), truth_tags - engine_tags, engine_tags - truth_tags, dict(by_geometry)
    )


def family(c: Crossing) -> str:
    if c.transition == "cross":
        return "gate"
    return "waypoint" if c.transition == "closest" else "zone"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> tuple[float, float, float]:
    return percentile(values, 0.5), percentile(values, 0.95), max(values)


def table(rows: Iterable[tuple[Method, float, Comparison]]) -> str:
    """Markdown: method × noise × family → n, p50 / p95 / max error (s), missed/phantom."""
    lines = [
        "| method | noise σ | kind | n | p50 s | p95 s | max s | missed | phantom |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, noise, comp in rows:
        for fam in ("gate", "zone", "waypoint"):
            values = comp.errors_s.get(fam, [])
            if not values:
                continue
            p50, p95, top = summary(values)
            missed = sum(n for t, n in comp.missed.items() if _family_of(t) == fam)
            phantom = sum(n for t, n in comp.phantom.items() if _family_of(t) == fam)
            lines.append(
                f"| {method} | {noise:g} m | {fam} | {len(values)} | {p50:.4f} | {p95:.4f} "
                f"| {top:.4f} | {missed} | {phantom} |"
            )
    return "\n".join(lines)


def geometry_table(rows: Iterable[tuple[Method, float, Comparison]]) -> str:
    """Markdown: gates by method × noise × geometry → n, p50 / p95 / max error (s)."""
    lines = [
        "| method | noise σ | geometry | n | p50 s | p95 s | max s |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, noise, comp in rows:
        for name in GEOMETRIES:
            values = comp.gate_errors_s.get(name, [])
            if not values:
                continue
            p50, p95, top = summary(values)
            lines.append(
                f"| {method} | {noise:g} m | {name} | {len(values)} | {p50:.4f} | {p95:.4f} "
                f"| {top:.4f} |"
            )
    return "\n".join(lines)


def _family_of(t: Tag) -> str:
    if t[2] in ("forward", "reverse"):
        return "gate"
    return "waypoint" if t[2] == "closest" else "zone"


def rows_for(event: SampleEvent, noises: Sequence[float]) -> list[tuple[Method, float, Comparison]]:
    """Every method at every noise level on one event."""
    index = index_of(event)
    rows: list[tuple[Method, float, Comparison]] = []
    for noise in noises:
        run = simulate(event, noise)
        for method in METHODS:
            rows.append((method, noise, compare(run, crossings(run, index, method))))
    return rows


def main(argv: Sequence[str]) -> None:
    noises = [float(a) for a in argv] or [0.0, 1.0, 3.0]
    for name, event in (("the sample event", load_event()), ("the kart course", kart_event())):
        rows = rows_for(event, noises)
        print(f"\n{DEVICES} devices, 1 Hz, seed {SEED}, {name}: by kind")
        print(table(rows))
        print(f"\n{name}: gates by geometry (heading change between the bracketing fixes)")
        print(geometry_table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
