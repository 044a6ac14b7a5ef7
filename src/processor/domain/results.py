"""Stage results, stage ranking and event classification: pure functions of the rows.

Results are recomputed whenever their inputs change (late data, replay, an official's
correction: DESIGN rule 7), so everything here is a deterministic function of its
arguments: no clock (the caller passes `now_ms`), no I/O, input order never matters.

Decisions the rules leave open:

- Manual precedence (ADR 0004), per geofence: a `manual` row that is not `superseded`
  takes the gate over; then only manual `valid` rows count, and a manual row with any
  other status (`void`, `rejected`) annuls the crossing. A row is manual unless its source
  is `auto` (the schema's default is `manual`: a row typed in by hand is an official's).
- Splits that were not crossed are omitted; each split names its geofence, so a reader
  lines them up by id (a null placeholder would add nothing but a second "missing" form).
- Ties share a rank (competition ranking: 1, 2, 2, 4); the tied cars are listed by
  number, and the second of them is 0 behind the car ahead.
- An entry without a class gets no class rank (it is in no class, not in a class "None").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Literal, Protocol, TypeVar

import msgspec

from processor.domain.config import Geofence, Stage

ResultStatus = Literal["running", "finished", "dnf", "dns"]
COUNTING = "valid"
SUPERSEDED = "superseded"
_K = TypeVar("_K", bound=Hashable)


class TimingRecordIn(msgspec.Struct, frozen=True):
    """A timing record as results need it (`public.timing_records`)."""

    geofence_id: int
    kind: str  # start_line, split_line, finish_line, waypoint, zone_entry, zone_exit
    crossed_at_ms: int
    source: str  # auto | manual
    status: str  # valid, superseded, void, …
    key: str  # a stable identity for the evidence (manual rows may have none: use the id)


class PenaltyIn(msgspec.Struct, frozen=True):
    """A penalty (`public.penalties`); only `valid` ones count, whatever their source."""

    key: str
    kind: str
    amount_ms: int
    source: str
    status: str


class Split(msgspec.Struct, frozen=True):
    geofence: int
    name: str
    at_ms: int
    elapsed_ms: int  # since the start


class Evidence(msgspec.Struct, frozen=True):
    """The rows a result was computed from, so a protest can be answered row by row."""

    timing_records: tuple[str, ...] = ()  # start, splits, finish: in time order
    penalties: tuple[str, ...] = ()  # the counted ones, by key


class StageResult(msgspec.Struct, frozen=True):
    stage: int
    entry: int
    status: ResultStatus
    start_at_ms: int | None
    finish_at_ms: int | None
    elapsed_ms: int | None  # finish − start (known once finished, in time or not)
    penalty_ms: int
    total_ms: int | None  # elapsed + penalty
    splits: tuple[Split, ...]
    evidence: Evidence


class RankInput(msgspec.Struct, frozen=True):
    entry: int
    number: int  # display order among tied cars
    entry_class: str | None
    status: str
    total_ms: int | None


class Ranking(msgspec.Struct, frozen=True):
    """None everywhere for a car that is not `finished` (not ranked)."""

    entry: int
    rank: int | None
    class_rank: int | None
    gap_leader_ms: int | None  # 0 for the leader
    gap_ahead_ms: int | None  # None for the first car listed; 0 behind a tied car


class StageOutcome(Protocol):
    """What classification needs of a stage result (a `StageResult` is one)."""

    @property
    def stage(self) -> int: ...
    @property
    def entry(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def total_ms(self) -> int | None: ...


class EventRow(msgspec.Struct, frozen=True):
    """One line of the event classification; `rank` None: not classified (see `reason`)."""

    entry: int
    rank: int | None
    total_ms: int | None  # the sum over the stages with results, when classified
    gap_leader_ms: int | None
    gap_ahead_ms: int | None
    stages_finished: int
    # Why not classified: the status in the first stage (in sequence) it did not finish,
    # `missing` when it has no result there; reason_stage None: no stage has results yet.
    reason_status: str | None = None
    reason_stage: int | None = None

    @property
    def reason(self) -> str | None:
        if self.rank is not None:
            return None
        if self.reason_stage is None:
            return "no stage results yet"
        status = "no result" if self.reason_status == "missing" else self.reason_status
        return f"{status} in stage {self.reason_stage}"


# -- one stage, one entry ----------------------------------------------------------


def counting_records(records: Iterable[TimingRecordIn]) -> list[TimingRecordIn]:
    """The records that count, in time order (then key: equal instants stay deterministic).

    Per geofence (ADR 0004): the official's rows, when there are any, decide alone.
    """
    by_fence: dict[int, list[TimingRecordIn]] = defaultdict(list)
    for record in records:
        if record.status != SUPERSEDED:
            by_fence[record.geofence_id].append(record)
    kept: list[TimingRecordIn] = []
    for fence_records in by_fence.values():
        manual = [r for r in fence_records if r.source != "auto"]
        decisive = manual or fence_records
        kept.extend(r for r in decisive if r.status == COUNTING)
    return sorted(kept, key=lambda r: (r.crossed_at_ms, r.key))


def stage_result(
    stage: Stage,
    geofences: Iterable[Geofence],
    entry: int,
    records: Iterable[TimingRecordIn],
    penalties: Iterable[PenaltyIn],
    now_ms: int,
) -> StageResult | None:
    """The entry's result on the stage as of `now_ms`; None while it may still start.

    `records` and `penalties` are this entry's on this stage; `geofences` may be the
    whole event's (only this stage's split lines are used, in `sequence` order).
    """
    counted = counting_records(records)
    start = next(
        (
            r
            for r in counted
            if r.kind == "start_line"
            and (stage.opens_at_ms is None or r.crossed_at_ms >= stage.opens_at_ms)
        ),
        None,
    )
    closed = stage.closes_at_ms is not None and now_ms >= stage.closes_at_ms
    valid_penalties = sorted((p for p in penalties if p.status == COUNTING), key=lambda p: p.key)
    penalty_ms = sum(p.amount_ms for p in valid_penalties)
    penalty_keys = tuple(p.key for p in valid_penalties)
    if start is None:
        if not closed:
            return None
        return StageResult(
            stage=stage.id,
            entry=entry,
            status="dns",
            start_at_ms=None,
            finish_at_ms=None,
            elapsed_ms=None,
            penalty_ms=penalty_ms,
            total_ms=None,
            splits=(),
            evidence=Evidence(penalties=penalty_keys),
        )
    start_ms = start.crossed_at_ms
    finish = next(
        (r for r in counted if r.kind == "finish_line" and r.crossed_at_ms > start_ms), None
    )
    finish_ms = None if finish is None else finish.crossed_at_ms
    splits, split_records = _splits(stage, geofences, counted, start_ms, finish_ms)
    limit_ms = None if stage.max_time_s is None else stage.max_time_s * 1000
    elapsed = total = None
    status: ResultStatus
    if finish_ms is not None:
        elapsed = finish_ms - start_ms
        total = elapsed + penalty_ms
        status = "finished" if limit_ms is None or elapsed <= limit_ms else "dnf"
    elif closed or (limit_ms is not None and now_ms >= start_ms + limit_ms):
        status = "dnf"
    else:
        status = "running"
    used = [start, *split_records, *([finish] if finish is not None else [])]
    evidence = Evidence(tuple(r.key for r in used), penalty_keys)
    return StageResult(
        stage=stage.id,
        entry=entry,
        status=status,
        start_at_ms=start_ms,
        finish_at_ms=finish_ms,
        elapsed_ms=elapsed,
        penalty_ms=penalty_ms,
        total_ms=total,
        splits=tuple(splits),
        evidence=evidence,
    )


def _splits(
    stage: Stage,
    geofences: Iterable[Geofence],
    counted: Sequence[TimingRecordIn],
    start_ms: int,
    finish_ms: int | None,
) -> tuple[list[Split], list[TimingRecordIn]]:
    """First crossing of each split line with start < at ≤ finish (or after start)."""
    lines = sorted(
        (g for g in geofences if g.stage == stage.id and g.kind == "split_line"),
        key=lambda g: (g.sequence, g.id),
    )
    splits: list[Split] = []
    used: list[TimingRecordIn] = []
    for line in lines:
        hit = next(
            (
                r
                for r in counted
                if r.geofence_id == line.id
                and r.crossed_at_ms > start_ms
                and (finish_ms is None or r.crossed_at_ms <= finish_ms)
            ),
            None,
        )
        if hit is not None:
            at = hit.crossed_at_ms
            splits.append(Split(line.id, line.name, at, at - start_ms))
            used.append(hit)
    return splits, used


# -- ranking -----------------------------------------------------------------------


class _Placed(msgspec.Struct, frozen=True):
    rank: int
    gap_leader_ms: int
    gap_ahead_ms: int | None


def _competition(items: Sequence[tuple[_K, int]]) -> dict[_K, _Placed]:
    """Competition ranking of (id, total) already in display order (total ascending)."""
    placed: dict[_K, _Placed] = {}
    leader = items[0][1] if items else 0
    previous: int | None = None
    rank = 0
    for position, (item, total) in enumerate(items, start=1):
        if previous is None or total != previous:
            rank = position
        gap_ahead = None if previous is None else total - previous
        placed[item] = _Placed(rank, total - leader, gap_ahead)
        previous = total
    return placed


def rank_stage(results: Sequence[RankInput]) -> dict[int, Ranking]:
    """Rank, class rank and gaps of every entry (by entry id); only `finished` are ranked."""
    _check_unique(r.entry for r in results)
    finished = sorted(
        (r for r in results if r.status == "finished" and r.total_ms is not None),
        key=lambda r: (r.total_ms, r.number, r.entry),
    )
    overall = _competition([(r.entry, _total(r.total_ms)) for r in finished])
    by_class: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in finished:
        if r.entry_class is not None:
            by_class[r.entry_class].append((r.entry, _total(r.total_ms)))
    class_rank: dict[int, int] = {}
    for members in by_class.values():
        class_rank.update({e: p.rank for e, p in _competition(members).items()})
    rankings: dict[int, Ranking] = {}
    for r in results:
        placed = overall.get(r.entry)
        if placed is None:
            rankings[r.entry] = Ranking(r.entry, None, None, None, None)
        else:
            rankings[r.entry] = Ranking(
                r.entry,
                placed.rank,
                class_rank.get(r.entry),
                placed.gap_leader_ms,
                placed.gap_ahead_ms,
            )
    return rankings


def _total(total_ms: int | None) -> int:
    assert total_ms is not None  # filtered by the caller
    return total_ms


def _check_unique(ids: Iterable[Hashable]) -> None:
    seen: set[Hashable] = set()
    for item in ids:
        if item in seen:
            raise ValueError(f"more than one result for {item!r}")
        seen.add(item)


# -- event classification ----------------------------------------------------------


def classify_event(
    stage_ids_in_sequence: Sequence[int],
    results: Iterable[StageOutcome],
    *,
    entries: Iterable[int] = (),
    numbers: Mapping[int, int] | None = None,
) -> list[EventRow]:
    """The event classification: classified rows by summed total, then the others.

    Only stages that have at least one result count. An entry is classified when it
    finished every one of them; the others follow (most stages finished first) with the
    first stage, in sequence, it did not finish. `entries` adds entries without any
    result; `numbers` (entry → car number) orders ties and the unclassified (default:
    entry id). Results of stages not in `stage_ids_in_sequence` are ignored.
    """
    order = {stage: i for i, stage in enumerate(stage_ids_in_sequence)}
    by_entry: dict[int, dict[int, StageOutcome]] = {e: {} for e in entries}
    for result in results:
        if result.stage not in order:
            continue
        own = by_entry.setdefault(result.entry, {})
        if result.stage in own:
            raise ValueError(f"more than one result for entry {result.entry}, stage {result.stage}")
        own[result.stage] = result
    active = [s for s in stage_ids_in_sequence if any(s in own for own in by_entry.values())]

    def number(entry: int) -> int:
        return entry if numbers is None else numbers.get(entry, entry)

    classified: list[tuple[int, int, int]] = []  # (total, number, entry)
    unclassified: list[EventRow] = []
    for entry, own in by_entry.items():
        done = [s for s in active if _finished(own.get(s))]
        if active and len(done) == len(active):
            classified.append((sum(_total(own[s].total_ms) for s in active), number(entry), entry))
            continue
        missed = next((s for s in active if s not in done), None)
        missed_result = None if missed is None else own.get(missed)
        status = "missing" if missed_result is None else missed_result.status
        unclassified.append(EventRow(entry, None, None, None, None, len(done), status, missed))
    classified.sort()
    placed = _competition([(entry, total) for total, _, entry in classified])
    rows: list[EventRow] = []
    for total, _, entry in classified:
        p = placed[entry]
        rows.append(EventRow(entry, p.rank, total, p.gap_leader_ms, p.gap_ahead_ms, len(active)))
    unclassified.sort(key=lambda r: (-r.stages_finished, number(r.entry), r.entry))
    return rows + unclassified


def _finished(result: StageOutcome | None) -> bool:
    return result is not None and result.status == "finished" and result.total_ms is not None
