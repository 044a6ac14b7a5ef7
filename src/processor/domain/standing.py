"""Pure rules of settling a (stage, entry) pair, beyond one result (results.py).

What the domain stage decides around `stage_result` and `rank_stage`: which rows a
result is computed from when officials have rows too (`timing_inputs`,
`penalty_inputs`, `one_per_entry`), when an entry is on a running stage
(`active_spans`, what alerts look at), when the clock alone changes a result
(`clock_decides`), when a changed result moves the stage's standing
(`standing_moved`), which speed-zone passages a pair has (`zone_visits`) and which to
measure again (`Remeasure`, `any_of`, `only`, `settles_now`).

Invariant: functions of their arguments only — no clock (`now_ms` is passed), no I/O —
so the results they lead to are functions of stored positions, configuration,
officials' rows and the time (DESIGN rule 7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from processor.domain.alerts import ActiveSpan
from processor.domain.config import Geofence, Stage
from processor.domain.results import PenaltyIn, RankInput, TimingRecordIn, stage_result

# Whether a speed-zone passage (zone, exit ms) must be measured again.
Remeasure = Callable[[int, int], bool]
# (status, total_ms) of a result: all ranking looks at (None: no result).
Standing = tuple[str | None, int | None]
_NONE: Standing = (None, None)
# Timing record kinds whose change settles their pair at once (`settles_now`).
_SETTLING_KINDS = frozenset(("start_line", "split_line", "finish_line", "zone_exit"))


# --- officials' rows --------------------------------------------------------------------

_Row = TypeVar("_Row", TimingRecordIn, PenaltyIn)


def _officials_win(
    auto: Iterable[_Row], manual: Sequence[Mapping[str, Any]], own: list[_Row]
) -> list[_Row]:
    """The automatic rows, minus any an official took over (same key, now `source =
    manual`), plus the officials' rows (`own`, converted from `manual`)."""
    taken = {r["key"] for r in manual if r["key"]}
    return [r for r in auto if r.key not in taken] + own


def timing_inputs(
    auto: Iterable[TimingRecordIn], manual: Sequence[Mapping[str, Any]]
) -> list[TimingRecordIn]:
    """A pair's timing records as its result sees them: its automatic records and its
    officials' `public.timing_records` rows (ADR 0004)."""
    own = [
        TimingRecordIn(r["geofence"], r["kind"], r["at_ms"], "manual", r["status"], r["key"] or "")
        for r in manual
    ]
    return _officials_win(auto, manual, own)


def penalty_inputs(
    auto: Iterable[PenaltyIn], manual: Sequence[Mapping[str, Any]]
) -> list[PenaltyIn]:
    """A pair's penalties as its result sees them (as `timing_inputs`)."""
    own = [
        PenaltyIn(r["key"] or "", r["kind"], r["amount_ms"], "manual", r["status"]) for r in manual
    ]
    return _officials_win(auto, manual, own)


def one_per_entry(inputs: Iterable[RankInput]) -> list[RankInput]:
    """Ranking inputs, automatic results first then officials': an official's result
    replaces the automatic one of the same entry."""
    return list({i.entry: i for i in inputs}.values())


# --- when an entry is on a stage ----------------------------------------------------------


def active_spans(
    stages: Iterable[Stage],
    geofences: Iterable[Geofence],
    entry: int,
    records: Callable[[int], list[TimingRecordIn]],
    now_ms: int,
) -> list[ActiveSpan]:
    """When the entry is on a running stage: from its start to its finish (or to the
    moment it is out of time, or still open). `records(stage)`: the entry's timing
    records on that stage (`timing_inputs`)."""
    fences = list(geofences)
    spans = []
    for stage in stages:
        result = stage_result(stage, fences, entry, records(stage.id), [], now_ms)
        if result is None or result.start_at_ms is None:
            continue
        end = result.finish_at_ms
        if end is None:
            limits = [stage.closes_at_ms]
            if stage.max_time_s is not None:
                limits.append(result.start_at_ms + stage.max_time_s * 1000)
            end = min((t for t in limits if t is not None), default=None)
        spans.append(ActiveSpan(stage.id, result.start_at_ms, end))
    return spans


# --- the clock and the standing -----------------------------------------------------------


def clock_decides(stage: Stage, status: str | None, start_at_ms: int | None, now_ms: int) -> bool:
    """Whether the clock alone changes the pair's result now. `status`, `start_at_ms`:
    its stored result's (status None: no result yet)."""
    closed = stage.closes_at_ms is not None and now_ms >= stage.closes_at_ms
    if status is None:
        return closed  # dns
    if status != "running":
        return False
    if closed:
        return True
    return (
        stage.max_time_s is not None
        and start_at_ms is not None
        and now_ms >= start_at_ms + stage.max_time_s * 1000
    )


def standing_moved(before: Standing | None, after: Standing | None) -> bool:
    """Whether a result's change needs the stage ranked again: only finished results are
    ranked, so a result that is or was finished and whose status or total changed (a
    car starting, or a new split time, moves no one). None: no result."""
    old, new = before or _NONE, after or _NONE
    return "finished" in (old[0], new[0]) and old != new


# --- speed zones ------------------------------------------------------------------------


def zone_visits(
    counted: Iterable[TimingRecordIn], fences: Mapping[int, Geofence]
) -> list[tuple[Geofence, int, int]]:
    """(zone, entry ms, exit ms) of every passage through a speed zone, from the counted
    records in time order (`results.counting_records`)."""
    visits = []
    entered: dict[int, int] = {}
    for r in counted:
        fence = fences.get(r.geofence_id)
        if fence is None or fence.kind != "speed_zone":
            continue
        if r.kind == "zone_entry":
            entered[fence.id] = r.crossed_at_ms
        elif r.kind == "zone_exit" and fence.id in entered:
            visits.append((fence, entered.pop(fence.id), r.crossed_at_ms))
    return visits


def any_of(remeasures: Sequence[Remeasure | None]) -> Remeasure | None:
    """One pair asked to be settled several times: remeasure what any of them asked
    (None: every passage)."""
    if any(r is None for r in remeasures):
        return None
    chosen = [r for r in remeasures if r is not None]
    if len(chosen) == 1:
        return chosen[0]
    return lambda fence, exit_ms: any(r(fence, exit_ms) for r in chosen)


def only(fences: Iterable[int]) -> Remeasure:
    """Remeasure the passages of these zones only (an in-order window: only a passage
    whose zone exit just came)."""
    chosen = frozenset(fences)

    def remeasure(fence: int, exit_ms: int) -> bool:
        return fence in chosen

    return remeasure


def settles_now(kind: str) -> bool:
    """Whether a changed timing record of an in-order window can change its pair's
    result or penalties now: a waypoint or zone entry only counts once the finish or the
    zone exit comes, and that record's own change settles the pair then."""
    return kind in _SETTLING_KINDS
