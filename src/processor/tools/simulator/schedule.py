"""Who drives what, when: the start list of a rally, plus extra devices for load.

Devices 0…E−1 are the event's entries, started one every `start_interval_s` in race
number order on every stage. Devices beyond that reuse the entries' cars
(i mod E) and drive the same stages, but join each route part-way at a random point
during the first start interval — so a benchmark with thousands of devices has
them all reporting at once — or, with `extras_start="start_line"`, start from the
start line at a random moment of the first start interval (a mass start: they have
results). Every choice comes from the seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from processor.tools.simulator.course import Course, StageCourse
from processor.tools.simulator.event import EntryRow
from processor.tools.simulator.trajectory import CarModel, Profile, Trajectory

IMEI_TAC = "35630704"
SAMPLE_SERIAL_BASE = 441_000  # the sample event's devices
EXTRA_SERIAL_BASE = 500_000  # devices beyond the sample's entries
# Where the load devices join each stage: part-way along the route (all on the road at
# once), or at the start line like the entries (they start, so they have results).
ExtrasStart = Literal["part_way", "start_line"]
MAX_DEVICES = 400_000
CLASS_TOP_KMH = {"T1": 178.0, "T2": 160.0, "T3": 168.0, "T4": 150.0}
MIN_LEG_GAP_MS = 60_000
KART_CLASS = "KART"
KART_MIN_KMH = 25.0

# A scripted leg: (device index, stage course, car) → the course and profile it drives
# instead, or None for the usual ones (see scenarios.py).
Shape = Callable[[int, StageCourse, CarModel], tuple[StageCourse, Profile] | None]


def imei(serial: int) -> str:
    """A 15-digit, Luhn-valid IMEI with the simulator's type allocation code."""
    body = f"{IMEI_TAC}{serial % 1_000_000:06d}"
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    devices: int
    seed: int = 1
    period_ms: int = 1000
    start_interval_s: float = 60.0
    first_start_after_open_s: float = 60.0
    lead_in_s: float = 60.0
    hold_s: float = 30.0
    time_shift_ms: int = 0
    extras_start: ExtrasStart = "part_way"


@dataclass(frozen=True, slots=True)
class LegPlan:
    """One stage driven by one device; fixes at first_ms, first_ms + period, … ≤ last_ms."""

    leg: int
    course: StageCourse
    trajectory: Trajectory
    s_start: float
    first_ms: int
    last_ms: int


@dataclass(frozen=True, slots=True)
class DevicePlan:
    index: int
    device_id: str
    entry: EntryRow | None
    car: CarModel
    phase_ms: int
    legs: tuple[LegPlan, ...]


def car_model(entry: EntryRow, seed: int) -> CarModel:
    """The crew's car: class top speed scaled by a skill factor; 1 in 5 ignore speed zones.
    Class `KART` (the accuracy course, kart.py) is a kart instead."""
    rng = random.Random(f"car:{seed}:{entry.id}")
    skill = rng.uniform(0.8, 1.0)
    if entry.class_ == KART_CLASS:
        return kart_model(rng, skill)
    top = CLASS_TOP_KMH.get(entry.class_, 160.0) / 3.6
    speeder = rng.random() < 0.2
    return CarModel(
        vmax_ms=top * (0.9 + 0.1 * skill),
        lat_acc=6.5 + 3.0 * skill,
        acc=2.2 + 1.8 * skill,
        brake=6.0 + 2.5 * skill,
        zone_factor=rng.uniform(1.12, 1.35) if speeder else rng.uniform(0.86, 0.97),
    )


def kart_model(rng: random.Random, skill: float) -> CarModel:
    """A racing kart: ~110 km/h at most, 1–1.5 g of grip, hard acceleration (0.4–0.65 g:
    out of a hairpin it gains 15–20 km/h per second) and braking (0.9–1.3 g), and no
    40 km/h floor in tight bends (25 km/h): between two 1 Hz fixes its speed and heading
    change a lot."""
    return CarModel(
        vmax_ms=(95.0 + 20.0 * skill) / 3.6,
        lat_acc=rng.uniform(10.0, 15.0),
        acc=rng.uniform(4.0, 6.5),
        brake=rng.uniform(9.0, 13.0),
        zone_factor=1.0,
        vmin_ms=KART_MIN_KMH / 3.6,
    )


def plan_devices(
    course: Course, config: ScheduleConfig, shape: Shape | None = None
) -> list[DevicePlan]:
    if not 1 <= config.devices <= MAX_DEVICES:
        raise ValueError(f"devices must be 1..{MAX_DEVICES}")
    entries = course.event.entries_in_start_order()
    if not entries:
        raise ValueError("the event has no entries")
    cars = [car_model(e, config.seed) for e in entries]
    return [_plan(course, config, i, entries, cars, shape) for i in range(config.devices)]


def _plan(
    course: Course,
    config: ScheduleConfig,
    index: int,
    entries: list[EntryRow],
    cars: list[CarModel],
    shape: Shape | None = None,
) -> DevicePlan:
    rank = index % len(entries)
    extra = index >= len(entries)
    rng = random.Random(f"plan:{config.seed}:{index}")
    phase = rng.randrange(config.period_ms)
    car = cars[rank]
    legs: list[LegPlan] = []
    free_from = -math.inf
    for number, usual in enumerate(course.stages):
        stage = usual.stage
        shaped = None if shape is None else shape(index, usual, car)
        stage_course, profile = shaped or (usual, usual.profile(car))
        open_ms = stage.opens_at_ms + config.time_shift_ms
        first_go = open_ms + 1000.0 * config.first_start_after_open_s
        if extra and config.extras_start == "start_line":
            # The whole field at once, each within the first start interval.
            s_start = 0.0
            t_go = first_go + rng.uniform(0.0, 1000.0 * config.start_interval_s)
            seen_from = t_go - 1000.0 * config.lead_in_s
        elif extra:
            s_start = profile.route.length * rng.uniform(0.05, 0.85)
            seen_from = first_go - 1000.0 * config.lead_in_s
            seen_from += rng.uniform(0.0, 1000.0 * config.start_interval_s)
            t_go = seen_from - 1000.0 * profile.time_at(s_start)
        else:
            s_start = 0.0
            t_go = first_go + rank * 1000.0 * config.start_interval_s
            seen_from = t_go - 1000.0 * config.lead_in_s
        if seen_from < free_from:  # previous leg ran late: start this one later
            t_go += free_from - seen_from
            seen_from = free_from
        traj = Trajectory(profile, t_go)
        first_ms = _grid_ceil(seen_from, phase, config.period_ms)
        last_ms = _grid_floor(traj.t_stop_ms + 1000.0 * config.hold_s, phase, config.period_ms)
        legs.append(LegPlan(number, stage_course, traj, s_start, first_ms, last_ms))
        free_from = last_ms + MIN_LEG_GAP_MS
    if extra:
        device_id = imei(EXTRA_SERIAL_BASE + index)
        entry = None
    else:
        entry = entries[rank]
        device_id = course.event.device(entry.device).imei
    return DevicePlan(index, device_id, entry, car, phase, tuple(legs))


def _grid_ceil(t_ms: float, phase: int, period: int) -> int:
    return phase + math.ceil((t_ms - phase) / period) * period


def _grid_floor(t_ms: float, phase: int, period: int) -> int:
    return phase + math.floor((t_ms - phase) / period) * period
