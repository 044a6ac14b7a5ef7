"""Builds the sample event (`data/sample-event.json` and its copy in `examples/`).

Run `python -m processor.tools.simulator.sample_builder` after changing this file; the
output is deterministic. Routes are road-like: straights, sweeping curves and
hairpin switchbacks, discretised so no chord strays more than 5 cm from the arc.
Gates sit mid-straight, so a gate is never near a bend or another part of the road.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from processor.core.timeparse import format_ms, parse_time_ms
from processor.tools.simulator.course import Course, crossings
from processor.tools.simulator.event import FORMAT, default_event_path, parse_event
from processor.tools.simulator.geo import XY, Projection, segment_intersection
from processor.tools.simulator.schedule import SAMPLE_SERIAL_BASE, imei
from processor.tools.simulator.trajectory import Route

CENTRE = (54.62, 25.20)  # lat, lon: east of Vilnius
GATE_HALF_WIDTH_M = 15.0
START_GATE_S = 15.0
FINISH_BEFORE_END_M = 250.0
FINAL_STRAIGHT_M = 450.0
MAX_SAGITTA_M = 0.05
MAX_CHORD_M = 10.0

CONVENTIONS = {
    "coordinates": "GeoJSON order [longitude, latitude], WGS84 degrees",
    "times": "ISO-8601 UTC with milliseconds",
    "stage.route": "the road the cars drive, start to stop control (extra field on stages)",
    "gate.direction": (
        "forward: valid when crossed from the right of the line (first→last point) to its "
        "left, i.e. in the direction of the line rotated 90° counter-clockwise; gates are "
        "drawn from the left road edge to the right one as the driver sees them; "
        "reverse: the opposite; either: both"
    ),
    "waypoint": "Point geometry; radius_m is the validation radius",
    "speed_zone": "Polygon geometry; speed_limit_kmh applies inside",
    "schedule": "simulator: first car starts 60 s after opens_at, then one per start interval",
}


class PathBuilder:
    """Turtle-style road drawing in local metres; heading in degrees clockwise from north."""

    def __init__(self, x: float, y: float, heading: float) -> None:
        self.points: list[XY] = [(x, y)]
        self.heading = heading

    def straight(self, length: float) -> None:
        x, y = self.points[-1]
        h = math.radians(self.heading)
        self.points.append((x + length * math.sin(h), y + length * math.cos(h)))

    def arc(self, radius: float, angle: float) -> None:
        """Turn `angle` degrees (positive: right) on a circle of `radius` metres."""
        step = min(
            2.0 * math.acos(1.0 - MAX_SAGITTA_M / radius),
            2.0 * math.asin(MAX_CHORD_M / (2 * radius)),
        )
        n = max(1, math.ceil(math.radians(abs(angle)) / step))
        d = angle / n
        chord = 2.0 * radius * math.sin(math.radians(abs(d)) / 2.0)
        for _ in range(n):
            self.heading += d / 2.0
            self.straight(chord)
            self.heading += d / 2.0

    @property
    def length(self) -> float:
        return sum(math.dist(a, b) for a, b in itertools.pairwise(self.points))


@dataclass(frozen=True)
class StageSpec:
    id: int
    name: str
    origin: XY
    heading: float
    bearing: float
    length_m: float
    switchbacks: int
    seed: int
    opens_at: str


STAGES = (
    StageSpec(
        1,
        "SS1 Nemenčinė forest",
        (-7500.0, 5200.0),
        95.0,
        100.0,
        9_000.0,
        1,
        11,
        "2026-05-01T06:00:00.000Z",
    ),
    StageSpec(
        2,
        "SS2 Pabradė plains",
        (-9000.0, -2600.0),
        70.0,
        75.0,
        14_000.0,
        0,
        23,
        "2026-05-01T07:30:00.000Z",
    ),
    StageSpec(
        3,
        "SS3 Riešė hairpins",
        (2500.0, -7500.0),
        10.0,
        5.0,
        5_000.0,
        3,
        37,
        "2026-05-01T09:15:00.000Z",
    ),
)


def _turn_toward(heading: float, bearing: float, rng: random.Random) -> float:
    dev = (heading - bearing + 180.0) % 360.0 - 180.0
    if abs(dev) > 30.0:
        return -math.copysign(1.0, dev)
    return rng.choice((-1.0, 1.0))


def build_route(spec: StageSpec) -> list[XY]:
    rng = random.Random(spec.seed)
    path = PathBuilder(spec.origin[0], spec.origin[1], spec.heading)
    path.straight(230.0)
    n = spec.switchbacks
    hairpins_at = [
        (0.2 + 0.55 * (k + 0.5) / n + rng.uniform(-0.05, 0.05)) * spec.length_m for k in range(n)
    ]
    while path.length < spec.length_m - FINAL_STRAIGHT_M - 300.0:
        if hairpins_at and path.length >= hairpins_at[0]:
            hairpins_at.pop(0)
            sign = rng.choice((-1.0, 1.0))
            path.straight(60.0)
            path.arc(14.0, sign * 176.0)
            path.straight(rng.uniform(100.0, 140.0))
            path.arc(14.0, -sign * 176.0)
            path.straight(rng.uniform(160.0, 260.0))
            continue
        sign = _turn_toward(path.heading, spec.bearing, rng)
        angle = rng.uniform(15.0, 80.0)
        dev = (path.heading + sign * angle - spec.bearing + 180.0) % 360.0 - 180.0
        if abs(dev) > 70.0:
            sign = -sign
        path.arc(rng.uniform(60.0, 450.0), sign * angle)
        path.straight(rng.uniform(160.0, 520.0))
    sign = _turn_toward(path.heading, spec.bearing, rng)
    path.arc(rng.uniform(120.0, 300.0), sign * rng.uniform(15.0, 40.0))
    path.straight(FINAL_STRAIGHT_M)
    check_simple(path.points)
    return path.points


def check_simple(points: list[XY], closed: bool = False) -> None:
    """A stage road (or a zone ring) never crosses itself."""
    if closed:
        points = [*points, points[0]]
    n = len(points) - 1
    boxes = [
        (min(a[0], b[0]), max(a[0], b[0]), min(a[1], b[1]), max(a[1], b[1]))
        for a, b in itertools.pairwise(points)
    ]
    for i in range(n):
        bi = boxes[i]
        for j in range(i + 2, n):
            bj = boxes[j]
            if closed and i == 0 and j == n - 1:
                continue
            if bi[1] < bj[0] or bj[1] < bi[0] or bi[3] < bj[2] or bj[3] < bi[2]:
                continue
            if segment_intersection(points[i], points[i + 1], points[j], points[j + 1]):
                raise ValueError(f"route crosses itself at segments {i} and {j}")


def _frame(route: Route, s: float) -> tuple[XY, XY]:
    """(point, unit left normal) at arc length s."""
    x, y, heading = route.at(s)
    h = math.radians(heading)
    return (x, y), (-math.cos(h), math.sin(h))


def _gate(route: Route, s: float) -> list[XY]:
    (x, y), (lx, ly) = _frame(route, s)
    w = GATE_HALF_WIDTH_M
    return [(x + w * lx, y + w * ly), (x - w * lx, y - w * ly)]


def _straights(route: Route, near: float, min_len: float) -> list[float]:
    """Middles of the long straights (away from start and finish), closest to `near` first."""
    mids = [
        (route.s[i] + route.s[i + 1]) / 2.0
        for i in range(len(route) - 1)
        if route.s[i + 1] - route.s[i] >= min_len
        and route.s[i] > 300.0
        and route.s[i + 1] < route.length - FINAL_STRAIGHT_M
    ]
    if not mids:
        raise ValueError("no straight long enough")
    return sorted(mids, key=lambda mid: abs(mid - near))


def _mid_straight(route: Route, near: float, min_len: float = 160.0) -> float:
    """Arc length of the middle of the long straight closest to `near`."""
    return _straights(route, near, min_len)[0]


def _zone_ring(
    route: Route, near: float, length: float, half_width: float
) -> tuple[float, list[XY]]:
    """A band polygon along the road that the road enters and leaves exactly once."""
    for s_in in _straights(route, near, 160.0):
        s_out = min(s_in + length, route.length - FINAL_STRAIGHT_M)
        ring = _band(route, s_in, s_out, half_width)
        try:
            check_simple(ring[:-1], closed=True)
        except ValueError:
            continue
        if len(crossings(route, ring)) == 2:
            return s_in, ring
    raise ValueError("no section of the road takes a simple zone")


def _band(route: Route, s_from: float, s_to: float, half_width: float) -> list[XY]:
    """A polygon ring following the road between two arc lengths, ±half_width wide."""
    marks = [s_from + k * 40.0 for k in range(int((s_to - s_from) / 40.0))] + [s_to]
    left, right = [], []
    for s in marks:
        (x, y), (lx, ly) = _frame(route, s)
        left.append((x + half_width * lx, y + half_width * ly))
        right.append((x - half_width * lx, y - half_width * ly))
    ring = left + right[::-1]
    return [*ring, ring[0]]


def _ll(proj: Projection, pts: list[XY]) -> list[list[float]]:
    out = []
    for x, y in pts:
        lon, lat = proj.to_lonlat(x, y)
        out.append([round(lon, 7), round(lat, 7)])
    return out


def _stage_rows(
    spec: StageSpec, proj: Projection, next_id: list[int]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    points = build_route(spec)
    route = Route(points)
    rng = random.Random(spec.seed * 7 + 1)
    max_time_s = math.ceil(route.length / 12.5 / 60.0) * 60
    opens = parse_time_ms(spec.opens_at)
    closes = opens + (60 + 19 * 60 + max_time_s + 600) * 1000
    stage = {
        "id": spec.id,
        "event": 1,
        "name": spec.name,
        "sequence": spec.id,
        "opens_at": spec.opens_at,
        "closes_at": format_ms(closes),
        "status": "scheduled",
        "max_time_s": max_time_s,
        "route": {"type": "LineString", "coordinates": _ll(proj, points)},
    }
    features: list[tuple[float, dict[str, Any]]] = []

    def add(s: float, kind: str, name: str, geometry: dict[str, Any], **extra: Any) -> None:
        features.append((s, {"kind": kind, "name": name, "geometry": geometry, **extra}))

    def line(pts: list[XY]) -> dict[str, Any]:
        return {"type": "LineString", "coordinates": _ll(proj, pts)}

    def polygon(ring: list[XY]) -> dict[str, Any]:
        return {"type": "Polygon", "coordinates": [_ll(proj, ring)]}

    finish_s = route.length - FINISH_BEFORE_END_M
    add(
        START_GATE_S,
        "start_line",
        f"SS{spec.id} start",
        line(_gate(route, START_GATE_S)),
        direction="forward",
    )
    for k, frac in enumerate((1 / 3, 2 / 3), start=1):
        s = _mid_straight(route, frac * route.length)
        add(
            s,
            "split_line",
            f"SS{spec.id} split {k}",
            line(_gate(route, s)),
            direction="forward" if k == 1 else "either",
        )
    add(
        finish_s,
        "finish_line",
        f"SS{spec.id} flying finish",
        line(_gate(route, finish_s)),
        direction="forward",
    )
    for k, (frac, radius) in enumerate(((0.27, 50.0), (0.58, 90.0)), start=1):
        s = frac * route.length
        (x, y), (lx, ly) = _frame(route, s)
        off = rng.uniform(-12.0, 12.0)
        point = _ll(proj, [(x + off * lx, y + off * ly)])[0]
        add(
            s,
            "waypoint",
            f"SS{spec.id} WP{k}",
            {"type": "Point", "coordinates": point},
            radius_m=radius,
            waypoint_type=WAYPOINT_TYPES[k - 1],
        )
    if spec.id in (1, 2):
        limit = 60.0 if spec.id == 1 else 50.0
        s_in, ring = _zone_ring(route, 0.45 * route.length, 1100.0, 35.0)
        add(
            s_in,
            "speed_zone",
            f"SS{spec.id} village, {limit:g} km/h",
            polygon(ring),
            speed_limit_kmh=limit,
        )
    else:
        s_in, ring = _zone_ring(route, 0.8 * route.length, 350.0, 40.0)
        add(s_in, "zone", f"SS{spec.id} spectator area", polygon(ring))
    fences = []
    for seq, (_, row) in enumerate(sorted(features, key=lambda f: f[0]), start=1):
        fences.append(
            {
                "id": next_id[0],
                "event": 1,
                "stage": spec.id,
                "kind": row["kind"],
                "name": row["name"],
                "geometry": row["geometry"],
                "sequence": seq,
                "direction": row.get("direction"),
                "radius_m": row.get("radius_m"),
                "speed_limit_kmh": row.get("speed_limit_kmh"),
                "waypoint_type": row.get("waypoint_type"),
            }
        )
        next_id[0] += 1
    return stage, fences


# WP1 of each stage is visible (WPV), WP2 masked (WPM): missing a masked one costs more.
WAYPOINT_TYPES = ("WPV", "WPM")
# The event's rules (events.rules): alert thresholds are the defaults; penalties explicit.
RULES: dict[str, Any] = {
    "speed": {
        "style": "table",
        "tolerance_kmh": 3.0,
        "min_duration_s": 3.0,
        "bands": [
            {"over_kmh": 0.0, "penalty_s": 60.0},
            {"over_kmh": 10.0, "penalty_s": 120.0},
            {"over_kmh": 20.0, "penalty_s": 300.0},
            {"over_kmh": 40.0, "penalty_s": 900.0},
        ],
    },
    "waypoints": {"default_s": 1800.0, "by_type": {"WPV": 900.0, "WPM": 1800.0}},
}


CREWS = (
    (101, "T1", "Jonas Kazlauskas / Tomas Petrauskas"),
    (102, "T1", "Marta Vaitkutė / Lina Žukauskienė"),
    (103, "T1", "Andris Bērziņš / Kārlis Ozols"),
    (104, "T1", "Piotr Nowak / Marek Wiśniewski"),
    (105, "T1", "Erik Lindqvist / Oskar Berg"),
    (106, "T1", "Rokas Jankauskas / Darius Stankevičius"),
    (201, "T3", "Eva Tamm / Kristjan Kask"),
    (202, "T3", "Mantas Urbonas / Paulius Navickas"),
    (203, "T3", "Juris Kalniņš / Edgars Liepa"),
    (204, "T3", "Sofia Mäkinen / Aino Virtanen"),
    (205, "T3", "Vytautas Butkus / Saulius Rimkus"),
    (301, "T4", "Lukas Balčiūnas / Ignas Žemaitis"),
    (302, "T4", "Agnieszka Zielińska / Tomasz Lewandowski"),
    (303, "T4", "Mikk Saar / Rasmus Sepp"),
    (304, "T4", "Aurimas Kavaliauskas / Justas Vasiliauskas"),
    (305, "T4", "Ieva Paulauskaitė / Gintarė Jonaitytė"),
    (306, "T4", "Nils Johansson / Emil Nilsson"),
    (401, "T2", "Kęstutis Pocius / Arūnas Sakalauskas"),
    (402, "T2", "Ilze Krūmiņa / Dace Zariņa"),
    (403, "T2", "Henrik Holm / Lars Dahl"),
)


def build_event() -> dict[str, Any]:
    proj = Projection(*CENTRE)
    next_id = [1]
    stages, geofences = [], []
    for spec in STAGES:
        stage, fences = _stage_rows(spec, proj, next_id)
        stages.append(stage)
        geofences.extend(fences)
    devices = [
        {
            "id": k,
            "imei": imei(SAMPLE_SERIAL_BASE + k),
            "model": "FMB920",
            "label": f"FMB920 #{k:02d}",
        }
        for k in range(1, len(CREWS) + 1)
    ]
    entries = [
        {
            "id": k,
            "event": 1,
            "device": k,
            "number": number,
            "crew_name": crew,
            "class": cls,
            "status": "confirmed",
        }
        for k, (number, cls, crew) in enumerate(CREWS, start=1)
    ]
    return {
        "format": FORMAT,
        "description": (
            "Baltic Spring Rally-Raid 2026 (fictional): 3 special stages east of Vilnius, "
            "20 crews with Teltonika FMB920 trackers. Rows follow the Directus collections."
        ),
        "conventions": CONVENTIONS,
        "events": [
            {
                "id": 1,
                "name": "Baltic Spring Rally-Raid 2026",
                "starts_at": "2026-05-01T05:00:00.000Z",
                "ends_at": "2026-05-01T14:00:00.000Z",
                "timezone": "Europe/Vilnius",
                "status": "scheduled",
                "rules": RULES,
            }
        ],
        "stages": stages,
        "geofences": geofences,
        "devices": devices,
        "entries": entries,
    }


def render(doc: dict[str, Any]) -> bytes:
    """Indented JSON with each geometry on one line: readable and small."""
    placeholders: dict[str, bytes] = {}

    def stash(value: dict[str, Any]) -> str:
        key = f"@@geometry{len(placeholders)}@@"
        placeholders[key] = msgspec.json.encode(value)
        return key

    copy = msgspec.json.decode(msgspec.json.encode(doc))
    for stage in copy["stages"]:
        stage["route"] = stash(stage["route"])
    for fence in copy["geofences"]:
        fence["geometry"] = stash(fence["geometry"])
    text = msgspec.json.format(msgspec.json.encode(copy), indent=2)
    for key, value in placeholders.items():
        text = text.replace(f'"{key}"'.encode(), value)
    return text + b"\n"


def example_path() -> Path:
    return Path(__file__).resolve().parents[4] / "examples" / "sample-event" / "event.json"


def check(raw: bytes) -> None:
    """The built file loads, and every gate is crossed exactly once, forward."""
    event = parse_event(raw)
    course = Course(event)
    for stage in course.stages:
        gates = {h.fence.id for h in stage.gates}
        if len(stage.gates) != len(gates) or not all(h.forward for h in stage.gates):
            raise ValueError(f"stage {stage.stage.id}: a gate is crossed twice or backwards")
        if len(stage.zones) != 2:
            raise ValueError(f"stage {stage.stage.id}: its zone is not entered and left once")


def main() -> None:
    raw = render(build_event())
    check(raw)
    targets = [default_event_path(), example_path()]
    for path in targets:
        if path.parent.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(raw)
            sys.stdout.write(f"wrote {path} ({len(raw)} bytes)\n")


if __name__ == "__main__":
    main()
