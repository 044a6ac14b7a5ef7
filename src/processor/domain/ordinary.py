"""Whether new records can open no alert: the fast path's check, a pure rule.

The batch fast path of the domain stage skips the alert detectors for a window whose
new records are ordinary for every one of them: moving, near a route, no panic, no
gap, no GPS jump, not a late upload. Each condition restates a detector's trigger
(`processor.domain.alerts`) with the detector's own function wherever one exists
(`panic_triggers`, `jump_between`), so the two cannot disagree near a threshold.

Invariant (checked as a property in tests/unit/domain/test_ordinary.py): when
`ordinary` is True for records appended after `previous`, and no alert of the earlier
records can change from the window's start (`AlertSpan.may_change_from`), the
detectors find on the whole track exactly the alerts they found before the window.

One limit, by design: with the entry's active spans unknown (`active` None) "near a
route" means near the route of some stage of the event, since the stage the car is on
is not known — exact when the event has one routed stage, a heuristic when a car can
drive along another stage's route. With `active` known, each fix is held to the route
of the stage it is on.
"""

from __future__ import annotations

from collections.abc import Sequence

from processor.core.position import Position
from processor.domain.alerts import ActiveSpan, RouteIndex, jump_between, panic_triggers
from processor.domain.projection import LonLat
from processor.domain.rules import AlertRules


def ordinary(
    previous: Position,
    previous_fix: Position | None,
    new: Sequence[Position],
    rules: AlertRules,
    routes: RouteIndex | None,
    stages: Sequence[int],
    active: Sequence[ActiveSpan] | None = None,
) -> bool:
    """Whether `new` (in time order), after the device's last record `previous` and its
    last valid fix `previous_fix`, can start no alert of any kind.

    `stages`: the event's stages (those with a route in `routes` are checked for off
    route). `active`: the entry's active spans if known (None: any fix may be on any
    stage): a slow fix off every active span is ordinary too — a car queueing at its
    start or parked after its finish cannot be a stopped car (`alerts.detect_stopped`).
    """
    lost_ms = rules.signal_lost.after_s * 1000
    last, last_fix = previous, previous_fix
    points: list[LonLat] = []
    on: list[list[int] | None] = []  # per point: the routed stages it is on, if known
    routed = [s for s in stages if routes is not None and s in routes]
    for p in new:
        if p.ts_ms - last.ts_ms > lost_ms:
            return False
        if p.received_at_ms - p.ts_ms > lost_ms:
            return False  # a buffered upload: the signal was lost meanwhile
        if panic_triggers(p, rules.panic):
            return False
        if p.fix_valid:
            spans = None if active is None else [s for s in active if s.contains(p.ts_ms)]
            slow = p.speed is None or p.speed < rules.stopped.speed_below_kmh
            if slow and (spans is None or spans):
                return False
            if last_fix is not None and jump_between(last_fix, p, rules.gps_jump) is not None:
                return False
            points.append((p.longitude, p.latitude))
            on.append(
                None if spans is None else [s.stage_id for s in spans if s.stage_id in routed]
            )
            last_fix = p
        last = p
    if routes is None or not routed or not points:
        return True
    return all(_near_routes(routes, routed, points, on, rules.off_route.distance_m))


def _near_routes(
    routes: RouteIndex,
    routed: Sequence[int],
    points: Sequence[LonLat],
    on: Sequence[list[int] | None],
    radius_m: float,
) -> list[bool]:
    """Per point, whether it is near the route of every routed stage it is on, or (stage
    unknown) of some routed stage: one vectorised query per route."""
    asked = routed if any(o is None for o in on) else sorted({s for o in on if o for s in o})
    near = {stage: routes.near(stage, points, radius_m) for stage in asked}
    return [
        any(near[s][i] for s in routed) if stages is None else all(near[s][i] for s in stages)
        for i, stages in enumerate(on)
    ]
