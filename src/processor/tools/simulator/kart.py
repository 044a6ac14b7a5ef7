"""A kart-like course for the timing accuracy harness (tests/unit/domain/accuracy.py).

The sample event's gates sit mid-straight, where a 1 Hz track is nearly straight and
interpolation is easy. Real kart logs showed where it is not: in a tight hairpin the
chord between two fixes is much shorter than the arc driven, and out of or into a
hairpin a kart gains or loses 15–20 km/h within a second. This course puts gates
exactly there:

- a snake of hairpins (180°, radius 4–12 m, taken at 35–55 km/h: the heading turns
  45–135° between two fixes), each with a gate somewhere inside the turn;
- sweeping bends (radius 20–50 m, 45–100°), each with a gate inside the arc;
- gates on the straights: off a standing start, right after a hairpin (hard
  acceleration), before one (hard braking), and a flying finish.

The cars are karts (`schedule.kart_model`: class `KART`). The event is built in memory
and is deterministic; only the accuracy harness uses it, so the sample event and
everything other tests expect of it stay as they are. Gate names say where a gate is
("hairpin 3", "bend 2", "straight 5").
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from processor.core.timeparse import format_ms, parse_time_ms
from processor.tools.simulator.course import Course, crossings
from processor.tools.simulator.event import FORMAT, SampleEvent, parse_event
from processor.tools.simulator.geo import XY, Projection
from processor.tools.simulator.sample_builder import PathBuilder, check_simple
from processor.tools.simulator.schedule import KART_CLASS, imei
from processor.tools.simulator.trajectory import Route

Geometry = Literal["straight", "bend", "hairpin"]
CENTRE: Final = (54.705, 25.335)  # lat, lon: a (fictional) kart track north-east of Vilnius
KARTS: Final = 20
SERIAL_BASE: Final = 460_000
SEED: Final = 5
HAIRPINS: Final = 8
BENDS: Final = 8
GATE_HALF_WIDTH_M: Final = 6.0
OPENS_AT: Final = "2026-06-06T08:00:00.000Z"
START_GATE_S: Final = 15.0
FINISH_BEFORE_END_M: Final = 150.0


@dataclass(frozen=True, slots=True)
class GateSpec:
    s: float  # arc length along the route
    geometry: Geometry
    half_width_m: float


def build_route(seed: int = SEED) -> tuple[list[XY], list[GateSpec]]:
    """The road (local metres) and where its gates are."""
    rng = random.Random(seed)
    path = PathBuilder(0.0, 0.0, 0.0)
    gates = [GateSpec(START_GATE_S, "straight", GATE_HALF_WIDTH_M)]
    path.straight(140.0)
    # The snake: legs north and south, 2r apart, joined by 180° hairpins that alternate
    # right and left (each shifts the road east, so it never meets itself).
    for k in range(HAIRPINS):
        leg = rng.uniform(110.0, 170.0)
        start = path.length
        path.straight(leg)
        if k % 2:
            gates.append(
                GateSpec(path.length - rng.uniform(25.0, 40.0), "straight", GATE_HALF_WIDTH_M)
            )
        elif k:
            gates.append(GateSpec(start + rng.uniform(25.0, 60.0), "straight", GATE_HALF_WIDTH_M))
        radius = rng.uniform(4.0, 12.0)
        entry = path.length
        path.arc(radius, 180.0 if k % 2 == 0 else -180.0)
        turn = path.length - entry
        gates.append(GateSpec(entry + rng.uniform(0.1, 0.9) * turn, "hairpin", 0.9 * radius))
    start = path.length
    path.straight(rng.uniform(110.0, 150.0))
    gates.append(GateSpec(start + rng.uniform(25.0, 60.0), "straight", GATE_HALF_WIDTH_M))
    # Sweeping bends, heading east on average, away from the snake.
    path.arc(30.0, 90.0 if round(path.heading) % 360 == 0 else -90.0)
    for k in range(BENDS):
        path.straight(rng.uniform(50.0, 120.0))
        deviation = (path.heading - 90.0 + 180.0) % 360.0 - 180.0
        sign = -math.copysign(1.0, deviation) if abs(deviation) > 1.0 else (-1.0) ** k
        angle = rng.uniform(45.0, 100.0)
        radius = rng.uniform(20.0, 50.0)
        entry = path.length
        path.arc(radius, sign * angle)
        turn = path.length - entry
        gates.append(GateSpec(entry + rng.uniform(0.2, 0.8) * turn, "bend", GATE_HALF_WIDTH_M))
    path.straight(300.0)
    gates.append(GateSpec(path.length - FINISH_BEFORE_END_M, "straight", GATE_HALF_WIDTH_M))
    check_simple(path.points)
    return path.points, gates


def build_event(seed: int = SEED) -> dict[str, Any]:
    """The course as a sample-event document (one stage, gates only, 20 karts)."""
    proj = Projection(*CENTRE)
    points, specs = build_route(seed)
    route = Route(points)
    max_time_s = math.ceil(route.length / 8.0 / 60.0) * 60
    opens = parse_time_ms(OPENS_AT)
    closes = opens + (60 + KARTS * 60 + max_time_s + 600) * 1000
    geofences = []
    counts: dict[str, int] = {}
    for seq, spec in enumerate(specs, start=1):
        if seq == 1:
            kind, name = "start_line", "start"
        elif seq == len(specs):
            kind, name = "finish_line", "flying finish"
        else:
            counts[spec.geometry] = counts.get(spec.geometry, 0) + 1
            kind, name = "split_line", f"{spec.geometry} {counts[spec.geometry]}"
        geofences.append(
            {
                "id": seq,
                "event": 1,
                "stage": 1,
                "kind": kind,
                "name": name,
                "geometry": {"type": "LineString", "coordinates": _ll(proj, _gate(route, spec))},
                "sequence": seq,
                "direction": "forward",
            }
        )
    return {
        "format": FORMAT,
        "description": "Kart accuracy course (fictional): hairpins, bends and hard acceleration.",
        "events": [
            {
                "id": 1,
                "name": "Kart accuracy course",
                "starts_at": format_ms(opens - 3_600_000),
                "ends_at": format_ms(closes + 3_600_000),
                "timezone": "Europe/Vilnius",
                "status": "scheduled",
            }
        ],
        "stages": [
            {
                "id": 1,
                "event": 1,
                "name": "Kart hairpins",
                "sequence": 1,
                "opens_at": OPENS_AT,
                "closes_at": format_ms(closes),
                "status": "scheduled",
                "max_time_s": max_time_s,
                "route": {"type": "LineString", "coordinates": _ll(proj, points)},
            }
        ],
        "geofences": geofences,
        "devices": [
            {
                "id": k,
                "imei": imei(SERIAL_BASE + k),
                "model": "FMB920",
                "label": f"kart #{k:02d}",
            }
            for k in range(1, KARTS + 1)
        ],
        "entries": [
            {
                "id": k,
                "event": 1,
                "device": k,
                "number": k,
                "crew_name": f"Kart driver {k:02d}",
                "class": KART_CLASS,
            }
            for k in range(1, KARTS + 1)
        ],
    }


def kart_event(seed: int = SEED) -> SampleEvent:
    """The course, loaded and checked: every gate is crossed exactly once, forward."""
    event = parse_event(msgspec.json.encode(build_event(seed)))
    for stage in Course(event).stages:
        if sorted(h.fence.id for h in stage.gates) != [g.id for g in event.geofences]:
            raise ValueError("a gate of the kart course is crossed twice or not at all")
        if not all(h.forward for h in stage.gates):
            raise ValueError("a gate of the kart course is crossed backwards")
    return event


def _gate(route: Route, spec: GateSpec) -> list[XY]:
    """A line across the road at `spec.s`, drawn from its left edge to its right."""
    x, y, heading = route.at(spec.s)
    h = math.radians(heading)
    lx, ly = -math.cos(h), math.sin(h)
    w = spec.half_width_m
    line = [(x + w * lx, y + w * ly), (x - w * lx, y - w * ly)]
    if len(crossings(route, line)) != 1:
        raise ValueError(f"the gate at s = {spec.s:.1f} m meets the road more than once")
    return line


def _ll(proj: Projection, pts: list[XY]) -> list[list[float]]:
    out = []
    for x, y in pts:
        lon, lat = proj.to_lonlat(x, y)
        out.append([round(lon, 7), round(lat, 7)])
    return out
