"""Stage results (manual precedence, start/finish/splits, statuses), ranking and the event
classification: worked examples for each rule, properties for the invariants."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.domain.config import Geofence, LineGeometry, Stage
from processor.domain.results import (
    EventRow,
    Evidence,
    PenaltyIn,
    Ranking,
    RankInput,
    Split,
    StageResult,
    TimingRecordIn,
    classify_event,
    counting_records,
    rank_stage,
    stage_result,
)

_PROPS = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

OPENS = 1_000_000
CLOSES = 5_000_000
STAGE = Stage(7, 1, "SS1", 1, OPENS, CLOSES, "open", max_time_s=600)  # 10 min allowed
START, SPLIT_A, SPLIT_B, FINISH = 70, 71, 72, 73
_LINE = LineGeometry(((25.0, 54.0), (25.001, 54.0)))


def fence(fence_id: int, kind: str, sequence: int, stage: int = 7) -> Geofence:
    return Geofence(fence_id, 1, stage, kind, f"g{fence_id}", _LINE, sequence, "forward")  # type: ignore[arg-type]


# Split B is drawn first but comes second on the road: sequence decides, not id.
FENCES = (
    fence(START, "start_line", 0),
    fence(SPLIT_B, "split_line", 2),
    fence(SPLIT_A, "split_line", 1),
    fence(FINISH, "finish_line", 3),
    fence(99, "split_line", 1, stage=8),  # another stage's split
)
KIND = {START: "start_line", SPLIT_A: "split_line", SPLIT_B: "split_line", FINISH: "finish_line"}


def rec(
    fence_id: int, at: int, source: str = "auto", status: str = "valid", key: str | None = None
) -> TimingRecordIn:
    key = key or f"{source}:{fence_id}:{at}:{status}"
    return TimingRecordIn(fence_id, KIND.get(fence_id, "split_line"), at, source, status, key)


def pen(key: str, amount: int, status: str = "valid", source: str = "auto") -> PenaltyIn:
    return PenaltyIn(key, "speeding", amount, source, status)


def result(
    records: Sequence[TimingRecordIn],
    now: int = CLOSES - 1,
    penalties: Sequence[PenaltyIn] = (),
    stage: Stage = STAGE,
) -> StageResult | None:
    return stage_result(stage, FENCES, 3, records, penalties, now)


def done(records: Sequence[TimingRecordIn], **kwargs: object) -> StageResult:
    outcome = result(records, **kwargs)  # type: ignore[arg-type]
    assert outcome is not None
    return outcome


# -- which records count -----------------------------------------------------------


def test_auto_valid_records_count_and_superseded_never_do() -> None:
    kept = counting_records(
        [rec(START, 30), rec(START, 10, status="superseded"), rec(START, 20, status="void")]
    )
    assert [r.crossed_at_ms for r in kept] == [30]


def test_a_manual_row_takes_its_gate_over_and_only_its_gate() -> None:
    auto_start, auto_finish = rec(START, 10), rec(FINISH, 90)
    manual_finish = rec(FINISH, 95, source="manual")
    kept = counting_records([auto_finish, manual_finish, auto_start])
    assert kept == [auto_start, manual_finish]


def test_a_manual_void_annuls_the_gate() -> None:
    kept = counting_records([rec(FINISH, 90), rec(FINISH, 91, source="manual", status="void")])
    assert kept == []
    kept = counting_records([rec(FINISH, 90), rec(FINISH, 91, source="manual", status="rejected")])
    assert kept == []


def test_a_superseded_manual_row_gives_the_gate_back() -> None:
    auto = rec(FINISH, 90)
    assert counting_records([auto, rec(FINISH, 80, source="manual", status="superseded")]) == [auto]


def test_a_row_without_the_auto_source_is_an_officials() -> None:
    typed_in = rec(FINISH, 95, source="")
    assert counting_records([rec(FINISH, 90), typed_in]) == [typed_in]


def test_equal_instants_are_ordered_by_key() -> None:
    a, b = rec(START, 10, key="b"), rec(SPLIT_A, 10, key="a")
    assert counting_records([a, b]) == [b, a]


# -- one stage result --------------------------------------------------------------


def test_a_clean_run_with_splits_penalties_and_evidence() -> None:
    records = [
        rec(START, OPENS + 100, key="s"),
        rec(SPLIT_B, OPENS + 200_100, key="b"),
        rec(SPLIT_A, OPENS + 100_100, key="a"),
        rec(FINISH, OPENS + 300_100, key="f"),
        rec(99, OPENS + 150_000, key="other-stage"),
    ]
    penalties = [pen("p2", 10_000), pen("p1", 5_000, source="manual"), pen("p3", 60_000, "void")]
    outcome = done(records, penalties=penalties)
    assert outcome == StageResult(
        stage=7,
        entry=3,
        status="finished",
        start_at_ms=OPENS + 100,
        finish_at_ms=OPENS + 300_100,
        elapsed_ms=300_000,
        penalty_ms=15_000,
        total_ms=315_000,
        splits=(
            Split(SPLIT_A, f"g{SPLIT_A}", OPENS + 100_100, 100_000),
            Split(SPLIT_B, f"g{SPLIT_B}", OPENS + 200_100, 200_000),
        ),
        evidence=Evidence(("s", "a", "b", "f"), ("p1", "p2")),
    )


def test_not_started_is_no_result_until_the_stage_closes_then_dns() -> None:
    assert result([], now=CLOSES - 1) is None
    dns = done([], now=CLOSES, penalties=[pen("late", 1_000)])
    assert (dns.status, dns.start_at_ms, dns.elapsed_ms, dns.total_ms) == ("dns", None, None, None)
    assert (dns.penalty_ms, dns.evidence) == (1_000, Evidence((), ("late",)))


def test_without_a_closing_time_an_entry_that_did_not_start_has_no_result() -> None:
    open_ended = Stage(7, 1, "SS1", 1, OPENS, None, max_time_s=600)
    assert result([], now=10**13, stage=open_ended) is None


def test_a_start_before_the_stage_opens_does_not_count() -> None:
    early = [rec(START, OPENS - 1)]
    assert result(early) is None
    outcome = done([*early, rec(START, OPENS), rec(START, OPENS + 5)])
    assert outcome.start_at_ms == OPENS


def test_the_finish_is_the_first_after_the_start() -> None:
    outcome = done([rec(FINISH, OPENS + 10), rec(START, OPENS + 20), rec(FINISH, OPENS + 30)])
    assert (outcome.finish_at_ms, outcome.elapsed_ms) == (OPENS + 30, 10)


def test_running_then_dnf_by_max_time_or_by_closing() -> None:
    start = OPENS + 1_000
    assert done([rec(START, start)], now=start + 599_999).status == "running"
    timed_out = done([rec(START, start)], now=start + 600_000)
    assert (timed_out.status, timed_out.elapsed_ms, timed_out.total_ms) == ("dnf", None, None)
    no_limit = Stage(7, 1, "SS1", 1, OPENS, CLOSES)
    assert done([rec(START, start)], now=CLOSES - 1, stage=no_limit).status == "running"
    assert done([rec(START, start)], now=CLOSES, stage=no_limit).status == "dnf"


def test_a_finish_over_the_max_time_is_dnf_and_on_it_is_finished() -> None:
    start = OPENS + 1_000
    on_time = done([rec(START, start), rec(FINISH, start + 600_000)])
    assert (on_time.status, on_time.elapsed_ms) == ("finished", 600_000)
    late = done([rec(START, start), rec(FINISH, start + 600_001)], penalties=[pen("p", 5)])
    assert (late.status, late.elapsed_ms, late.total_ms) == ("dnf", 600_001, 600_006)


def test_splits_outside_start_and_finish_are_ignored_missing_ones_omitted() -> None:
    start, finish = OPENS + 1_000, OPENS + 100_000
    records = [
        rec(START, start),
        rec(SPLIT_A, start - 5),  # before the start
        rec(SPLIT_A, finish + 5),  # after the finish
        rec(SPLIT_B, finish),  # at the finish: counts
        rec(FINISH, finish),
    ]
    outcome = done(records)
    assert outcome.splits == (Split(SPLIT_B, f"g{SPLIT_B}", finish, finish - start),)
    running = done([rec(START, start), rec(SPLIT_A, start + 50)], now=start + 60)
    assert running.status == "running"
    assert running.splits == (Split(SPLIT_A, f"g{SPLIT_A}", start + 50, 50),)


def test_an_officials_corrections_change_the_result() -> None:
    start = OPENS + 1_000
    auto = [rec(START, start), rec(FINISH, start + 100_000)]
    fixed = done([*auto, rec(FINISH, start + 99_000, source="manual", key="m")])
    assert (fixed.elapsed_ms, fixed.evidence.timing_records[-1]) == (99_000, "m")
    voided = done([*auto, rec(START, start, source="manual", status="void")], now=CLOSES)
    assert voided.status == "dns"
    waived = done(auto, penalties=[pen("p", 30_000, status="cancelled", source="manual")])
    assert (waived.penalty_ms, waived.total_ms) == (0, 100_000)


_instants = st.integers(OPENS - 50_000, OPENS + 800_000)
_records = st.lists(
    st.builds(
        rec,
        st.sampled_from([START, SPLIT_A, SPLIT_B, FINISH, 99]),
        _instants,
        st.sampled_from(["auto", "manual"]),
        st.sampled_from(["valid", "valid", "superseded", "void"]),
    ),
    max_size=12,
)


@_PROPS
@given(_records, st.integers(OPENS, CLOSES + 10), st.randoms(use_true_random=False))
def test_a_result_does_not_depend_on_row_order(
    records: list[TimingRecordIn], now: int, rnd: random.Random
) -> None:
    shuffled = list(records)
    rnd.shuffle(shuffled)
    assert result(records, now=now) == result(shuffled, now=now)


@_PROPS
@given(_records, st.integers(OPENS, CLOSES + 10))
def test_result_invariants(records: list[TimingRecordIn], now: int) -> None:
    outcome = result(records, now=now)
    if outcome is None:
        return
    if outcome.start_at_ms is None:
        assert outcome.status == "dns"
        return
    assert outcome.start_at_ms >= OPENS
    ats = [s.at_ms for s in outcome.splits]
    assert all(a > outcome.start_at_ms for a in ats)
    if outcome.finish_at_ms is not None:
        assert outcome.elapsed_ms == outcome.finish_at_ms - outcome.start_at_ms > 0
        assert outcome.total_ms == outcome.elapsed_ms + outcome.penalty_ms
        assert all(a <= outcome.finish_at_ms for a in ats)
        assert outcome.status in ("finished", "dnf")
    else:
        assert outcome.status in ("running", "dnf")
    counted = {r.key for r in counting_records(records)}
    assert set(outcome.evidence.timing_records) <= counted


# -- stage ranking -----------------------------------------------------------------


def ri(entry: int, total: int | None, cls: str | None = "A", status: str = "finished") -> RankInput:
    return RankInput(entry, number=entry + 100, entry_class=cls, status=status, total_ms=total)


def test_ties_share_a_rank_and_gaps_follow_the_listing() -> None:
    rankings = rank_stage(
        [
            ri(4, 1_500, "B"),
            ri(1, 1_000, "A"),
            ri(3, 1_200, "A"),
            ri(2, 1_200, "B"),
            ri(5, 1_200, None),
            ri(6, None, "A", "running"),
            ri(7, 900, "A", "dnf"),
            ri(8, None, "A", "finished"),  # a finished row without a total cannot be ranked
        ]
    )
    assert rankings == {
        1: Ranking(1, 1, 1, 0, None),
        2: Ranking(2, 2, 1, 200, 200),
        3: Ranking(3, 2, 2, 200, 0),
        5: Ranking(5, 2, None, 200, 0),
        4: Ranking(4, 5, 2, 500, 300),
        6: Ranking(6, None, None, None, None),
        7: Ranking(7, None, None, None, None),
        8: Ranking(8, None, None, None, None),
    }


def test_class_ranks_tie_too() -> None:
    rankings = rank_stage([ri(1, 10), ri(2, 10), ri(3, 11), ri(4, 5, "B")])
    assert [rankings[e].class_rank for e in (1, 2, 3, 4)] == [1, 1, 3, 1]
    assert [rankings[e].rank for e in (1, 2, 3, 4)] == [2, 2, 4, 1]


def test_rank_of_nothing_and_duplicates() -> None:
    assert rank_stage([]) == {}
    with pytest.raises(ValueError, match="more than one"):
        rank_stage([ri(1, 10), ri(1, 11)])


_rank_inputs = st.lists(
    st.tuples(
        st.integers(0, 5),  # few distinct totals: many ties
        st.sampled_from(["A", "B", None]),
        st.sampled_from(["finished", "finished", "dnf", "running"]),
    ),
    max_size=15,
).map(lambda rows: [ri(i, t * 100, c, s) for i, (t, c, s) in enumerate(rows)])


@_PROPS
@given(_rank_inputs, st.randoms(use_true_random=False))
def test_ranking_invariants(rows: list[RankInput], rnd: random.Random) -> None:
    rankings = rank_stage(rows)
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    assert rank_stage(shuffled) == rankings
    finished = [r for r in rows if r.status == "finished"]
    best = min((_t(r) for r in finished), default=0)
    for r in rows:
        got = rankings[r.entry]
        if r.status != "finished":
            assert got == Ranking(r.entry, None, None, None, None)
            continue
        assert got.rank == 1 + sum(_t(o) < _t(r) for o in finished)
        assert got.gap_leader_ms == _t(r) - best
        same = [o for o in finished if o.entry_class == r.entry_class]
        expected = None if r.entry_class is None else 1 + sum(_t(o) < _t(r) for o in same)
        assert got.class_rank == expected
    listed = sorted((r for r in finished), key=lambda r: (_t(r), r.number))
    aheads = [rankings[r.entry].gap_ahead_ms for r in listed]
    if listed:
        assert aheads[0] is None
        assert all(a is not None and a >= 0 for a in aheads[1:])
        assert (
            sum(a for a in aheads[1:] if a is not None) == rankings[listed[-1].entry].gap_leader_ms
        )


def _t(r: RankInput) -> int:
    assert r.total_ms is not None
    return r.total_ms


# -- event classification ----------------------------------------------------------


def sr(stage: int, entry: int, status: str, total: int | None = None) -> StageResult:
    return StageResult(stage, entry, status, None, None, None, 0, total, (), Evidence())  # type: ignore[arg-type]


def test_classification_sums_stages_with_results_and_explains_the_rest() -> None:
    results = [
        sr(1, 10, "finished", 100),
        sr(2, 10, "finished", 200),  # 300
        sr(1, 11, "finished", 150),
        sr(2, 11, "finished", 150),  # 300: tied with 10
        sr(1, 12, "finished", 90),
        sr(2, 12, "finished", 250),  # 340
        sr(1, 13, "finished", 80),
        sr(2, 13, "dnf"),
        sr(1, 14, "dns"),
        sr(2, 14, "dns"),
        sr(1, 15, "finished", 95),
        sr(2, 15, "running"),
        sr(1, 16, "finished", 95),  # no result in stage 2 yet
        sr(9, 10, "finished", 1),  # a stage not in the sequence: ignored
    ]
    # Stage 3 has no results at all: it does not count yet. Entry 17 has none anywhere.
    numbers = {10: 2, 11: 1, 12: 3, 13: 4, 14: 5, 15: 7, 16: 6, 17: 8}
    rows = classify_event([1, 2, 3], results, entries=[17, 10], numbers=numbers)
    assert rows == [
        EventRow(11, 1, 300, 0, None, 2),
        EventRow(10, 1, 300, 0, 0, 2),
        EventRow(12, 3, 340, 40, 40, 2),
        EventRow(13, None, None, None, None, 1, "dnf", 2),
        EventRow(16, None, None, None, None, 1, "missing", 2),
        EventRow(15, None, None, None, None, 1, "running", 2),
        EventRow(14, None, None, None, None, 0, "dns", 1),
        EventRow(17, None, None, None, None, 0, "missing", 1),
    ]
    assert [r.reason for r in rows[3:]] == [
        "dnf in stage 2",
        "no result in stage 2",
        "running in stage 2",
        "dns in stage 1",
        "no result in stage 1",
    ]
    assert rows[0].reason is None


def test_nobody_is_classified_before_any_stage_has_results() -> None:
    rows = classify_event([1, 2], [], entries=[5, 4])
    assert rows == [
        EventRow(4, None, None, None, None, 0, "missing", None),
        EventRow(5, None, None, None, None, 0, "missing", None),
    ]
    assert rows[0].reason == "no stage results yet"


def test_two_results_for_one_entry_and_stage_are_refused() -> None:
    with pytest.raises(ValueError, match="more than one result"):
        classify_event([1], [sr(1, 10, "finished", 1), sr(1, 10, "dnf")])


_event_results = st.lists(
    st.tuples(
        st.integers(1, 3),
        st.integers(1, 8),
        st.sampled_from(["finished", "finished", "finished", "dnf", "dns", "running"]),
        st.integers(1, 4),
    ),
    max_size=24,
    unique_by=lambda t: (t[0], t[1]),
).map(lambda rows: [sr(s, e, st_, t * 10 if st_ == "finished" else None) for s, e, st_, t in rows])


@_PROPS
@given(_event_results, st.randoms(use_true_random=False))
def test_classification_invariants(results: list[StageResult], rnd: random.Random) -> None:
    rows = classify_event([1, 2, 3], results)
    shuffled = list(results)
    rnd.shuffle(shuffled)
    assert classify_event([1, 2, 3], shuffled) == rows
    assert sorted(r.entry for r in rows) == sorted({r.entry for r in results})
    active = {r.stage for r in results}
    classified = [r for r in rows if r.rank is not None]
    assert rows[: len(classified)] == classified  # classified first
    for row in classified:
        own = [r for r in results if r.entry == row.entry]
        assert {r.stage for r in own if r.status == "finished"} == active
        assert row.total_ms == sum(r.total_ms or 0 for r in own)
        assert row.rank == 1 + sum(_sum(o) < _sum(row) for o in classified)
    for row in rows[len(classified) :]:
        assert row.reason_stage in active
        assert row.stages_finished < len(active)


def _sum(row: EventRow) -> int:
    assert row.total_ms is not None
    return row.total_ms
