"""Exact crossing times from the continuous trajectories, not from sampled fixes.

The arc length where the route meets a gate or zone boundary is found geometrically
once per stage; each car's time at that arc length is the closed-form inverse of its
piecewise constant-acceleration profile, so times are exact to float precision
(well below a millisecond). A crossing is in the truth only if it happens between a
device's first and last fix on that leg: before or after, no data can reveal it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from processor.tools.simulator import scenarios
from processor.tools.simulator.generator import Simulation
from processor.tools.simulator.schedule import DevicePlan, LegPlan

FORMAT = "processor-simulator-ground-truth/1"


class TruthRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """One crossing. Gates carry `direction`; zones `transition` (and, on a speed zone
    exit, the visit's top speed and time over the limit); waypoints the closest
    approach (`crossed_at` is then the time of closest approach)."""

    device_id: str
    entry: int | None
    stage: int
    leg: int
    geofence: int
    kind: str
    crossed_at: str
    crossed_at_ms: int
    exact_ms: float
    latitude: float
    longitude: float
    speed_kmh: float
    direction: str | None = None
    transition: str | None = None
    distance_m: float | None = None
    radius_m: float | None = None
    within_radius: bool | None = None
    speed_limit_kmh: float | None = None
    visit_max_speed_kmh: float | None = None
    visit_over_limit_ms: int | None = None


def compute(sim: Simulation, until: Mapping[str, int] | None = None) -> list[TruthRecord]:
    """Every crossing of every device; `until` clips each device at its last sent fix."""
    records: list[TruthRecord] = []
    for plan in sim.plans:
        limit = None if until is None else until.get(plan.device_id)
        if until is not None and limit is None:
            continue
        for leg in plan.legs:
            records.extend(r for r in _leg(sim, plan, leg) if limit is None or r.exact_ms <= limit)
    return records


def _leg(sim: Simulation, plan: DevicePlan, leg: LegPlan) -> Iterator[TruthRecord]:
    traj, stage = leg.trajectory, leg.course
    profile, route = traj.profile, traj.route
    to_lonlat = sim.course.projection.to_lonlat
    s_first = traj.state(leg.first_ms)[4]
    found: list[TruthRecord | None] = []

    def record(fence_id: int, kind: str, s: float, **extra: Any) -> TruthRecord | None:
        t = traj.time_at(s)
        if not (leg.first_ms < t <= leg.last_ms) or s <= s_first:
            return None
        x, y, _ = route.at(s)
        lon, lat = to_lonlat(x, y)
        ms = round(t)
        return TruthRecord(
            device_id=plan.device_id,
            entry=None if plan.entry is None else plan.entry.id,
            stage=stage.stage.id,
            leg=leg.leg,
            geofence=fence_id,
            kind=kind,
            crossed_at=sim.iso(ms),
            crossed_at_ms=ms,
            exact_ms=round(t, 4),
            latitude=lat,
            longitude=lon,
            speed_kmh=round(profile.speed_at_s(s) * 3.6, 3),
            **extra,
        )

    for gate in stage.gates:
        direction = "forward" if gate.forward else "reverse"
        found.append(record(gate.fence.id, gate.fence.kind, gate.s, direction=direction))
    entered: dict[int, float] = {}
    for hit in stage.zones:
        fence = hit.fence
        extra: dict[str, Any] = {"transition": "entry" if hit.entering else "exit"}
        if hit.entering:
            entered[fence.id] = hit.s
        elif fence.kind == "speed_zone" and fence.speed_limit_kmh is not None:
            s_in = max(entered.pop(fence.id, s_first), s_first)
            top, above_s = profile.time_above(s_in, hit.s, fence.speed_limit_kmh / 3.6)
            extra["speed_limit_kmh"] = fence.speed_limit_kmh
            extra["visit_max_speed_kmh"] = round(top * 3.6, 3)
            extra["visit_over_limit_ms"] = round(above_s * 1000.0)
        found.append(record(fence.id, fence.kind, hit.s, **extra))
    for table in stage.waypoints:
        distance, s = table.closest_from(s_first)
        radius = table.fence.radius_m or 0.0
        found.append(
            record(
                table.fence.id,
                "waypoint",
                s,
                distance_m=round(distance, 4),
                radius_m=radius,
                within_radius=distance <= radius,
            )
        )
    yield from sorted((r for r in found if r is not None), key=lambda r: r.exact_ms)


def write(path: Path | str, sim: Simulation, records: list[TruthRecord], truncated: bool) -> None:
    """A JSON object: run metadata (with the expected facts of any scenarios), then
    `records` one per line (diff- and grep-friendly)."""
    cfg = sim.config
    head: dict[str, Any] = {
        "format": FORMAT,
        "event": sim.event.event.id,
        "seed": cfg.seed,
        "devices": len(sim.plans),
        "rate_hz": cfg.rate_hz,
        "noise_m": cfg.noise_m,
        "start_interval_s": cfg.start_interval_s,
        "time_shift_ms": cfg.time_shift_ms,
        "truncated": truncated,
        "count": len(records),
    }
    if cfg.scenarios:
        head["scenarios"] = scenarios.expected(sim)
    encode = msgspec.json.encode
    with Path(path).open("wb") as out:
        out.write(encode(head)[:-1] + b',"records":[\n')
        for i, rec in enumerate(records):
            out.write(encode(rec) + (b",\n" if i + 1 < len(records) else b"\n"))
        out.write(b"]}\n")


def read(path: Path | str) -> list[TruthRecord]:
    """The records of a ground-truth file."""
    doc = msgspec.json.decode(Path(path).read_bytes(), type=_TruthFile)
    return doc.records


class _TruthFile(msgspec.Struct):
    format: str
    records: list[TruthRecord]
