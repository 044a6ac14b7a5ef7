"""The backfill's rate limit and job identity (no services)."""

from __future__ import annotations

from processor.domain_runner.backfill import RateLimit, Scope


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_the_rate_limit_holds_the_average_rate() -> None:
    t = FakeTime()
    limit = RateLimit(1000, t.clock, t.sleep)
    limit.start()
    for _ in range(10):
        t.now += 0.2  # a page of 500 takes 0.2 s of work
        await limit.took(500)
    # 5 000 positions at 1 000/s: 5 s in all, whatever the work took.
    assert abs((t.now - 100.0) - 5.0) < 1e-9
    assert all(abs(s - 0.3) < 1e-9 for s in t.slept)


async def test_a_slow_page_earns_at_most_a_second_of_credit() -> None:
    t = FakeTime()
    limit = RateLimit(1000, t.clock, t.sleep)
    limit.start()
    t.now += 10.0  # the database stalled for 10 s on the first page
    await limit.took(1000)
    assert t.slept == []
    for _ in range(3):
        await limit.took(1000)  # instant pages: no burst of 10 s worth
    assert sum(t.slept) >= 2.0 - 1e-9


async def test_no_limit_never_sleeps() -> None:
    t = FakeTime()
    limit = RateLimit(0, t.clock, t.sleep)
    for _ in range(5):
        await limit.took(10_000)
    assert t.slept == []


def test_the_job_is_the_scope_whatever_the_order_of_devices() -> None:
    a = Scope(model="FMB920", devices=("B", "A", "A"), since_ms=1, until_ms=2)
    b = Scope(model="FMB920", devices=("A", "B"), since_ms=1, until_ms=2)
    assert a.job == b.job
    assert a.job != Scope(model="FMB920", devices=("A",), since_ms=1, until_ms=2).job
    assert Scope().lo_ms < Scope().hi_ms
