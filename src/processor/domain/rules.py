"""Per-event rules: alert thresholds and penalty rules, with defaults.

They live in Directus as `events.rules` (JSON, edited by the organiser; ADR 0010), so
every number a result, penalty or alert depends on is configuration (rule 7) and is
copied into the evidence of what it produced. Any key left out takes the default
below; an unknown key or a wrong type makes the whole document invalid, reported with
the event's row and replaced by the defaults (a typo must be seen, not half-applied).
"""

from __future__ import annotations

from typing import Literal

import msgspec

SpeedPenaltyStyle = Literal["table", "formula"]


class StoppedRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Slower than `speed_below_kmh` for `after_s` opens a warning; `escalate_after_s`
    makes it critical; the first fix at or above the threshold closes it."""

    speed_below_kmh: float = 5.0
    after_s: float = 60.0
    escalate_after_s: float = 180.0


class SignalLostRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """No record for `after_s` while on a running stage."""

    after_s: float = 30.0
    escalate_after_s: float = 120.0


class GpsJumpRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Implied speed between consecutive fixes above `max_speed_kmh` (and at least
    `min_distance_m` apart, so two fixes a few ms apart cannot trip it)."""

    max_speed_kmh: float = 300.0
    min_distance_m: float = 50.0


class OffRouteRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Farther than `distance_m` from the stage route for `after_s`."""

    distance_m: float = 150.0
    after_s: float = 30.0


class PanicRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Records with one of these priorities (Teltonika: 2 = panic) or a non-zero value
    of one of these IO keys (e.g. "io247" crash detection) are critical at once."""

    priorities: tuple[int, ...] = (2,)
    alarm_io: tuple[str, ...] = ()
    # Panic records closer together than this are one alert.
    merge_s: float = 60.0


class AlertRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    stopped: StoppedRule = StoppedRule()
    signal_lost: SignalLostRule = SignalLostRule()
    gps_jump: GpsJumpRule = GpsJumpRule()
    off_route: OffRouteRule = OffRouteRule()
    panic: PanicRule = PanicRule()


class SpeedBand(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """From `over_kmh` km/h above the limit (inclusive), `penalty_s` seconds."""

    over_kmh: float
    penalty_s: float


class SpeedPenaltyRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a speed-zone infringement becomes a time penalty.

    `table` (rally-raid style): the maximum excess over the limit picks the highest band
    whose `over_kmh` it reaches. `formula`: metres gained over the limit ÷ limit speed ×
    `factor` (a car that gained 50 m over a 50 km/h limit gained 3.6 s; ×`factor`).
    Either way speed at or under limit + `tolerance_kmh` is no infringement, and an
    infringement must last at least `min_duration_s` above limit + tolerance.
    """

    style: SpeedPenaltyStyle = "table"
    tolerance_kmh: float = 3.0
    min_duration_s: float = 3.0
    bands: tuple[SpeedBand, ...] = (
        SpeedBand(0.0, 60.0),
        SpeedBand(10.0, 120.0),
        SpeedBand(20.0, 300.0),
        SpeedBand(40.0, 900.0),
    )
    factor: float = 10.0


class WaypointPenaltyRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Seconds per missed waypoint, by the geofence's `waypoint_type` (e.g. WPV, WPM,
    WPS); types not listed, and waypoints without a type, take `default_s`."""

    default_s: float = 1800.0
    by_type: dict[str, float] = msgspec.field(default_factory=dict)

    def penalty_s(self, waypoint_type: str | None) -> float:
        if waypoint_type is None:
            return self.default_s
        return self.by_type.get(waypoint_type, self.default_s)


class EventRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    alerts: AlertRules = AlertRules()
    speed: SpeedPenaltyRule = SpeedPenaltyRule()
    waypoints: WaypointPenaltyRule = WaypointPenaltyRule()


DEFAULT_RULES = EventRules()


class RulesError(ValueError):
    """An `events.rules` document that is not valid."""


def parse_rules(raw: object) -> EventRules:
    """Rules from `events.rules` (a JSON object, its text, or None for the defaults)."""
    if raw is None:
        return DEFAULT_RULES
    try:
        if isinstance(raw, str | bytes):
            rules = msgspec.json.decode(raw, type=EventRules)
        else:
            rules = msgspec.convert(raw, type=EventRules)
    except msgspec.MsgspecError as exc:
        raise RulesError(f"rules: {exc}") from None
    _check(rules)
    return rules


def _check(rules: EventRules) -> None:
    speed = rules.speed
    if speed.tolerance_kmh < 0 or speed.min_duration_s < 0 or speed.factor <= 0:
        raise RulesError("rules: speed tolerance and duration must be ≥ 0, factor > 0")
    overs = [b.over_kmh for b in speed.bands]
    if speed.style == "table" and (not overs or overs != sorted(set(overs))):
        raise RulesError("rules: speed bands must be non-empty, by increasing over_kmh")
    stopped = rules.alerts.stopped
    if stopped.escalate_after_s < stopped.after_s:
        raise RulesError("rules: alerts.stopped.escalate_after_s < after_s")
