"""The domain benchmark's verdict: "lag bounded" must be able to say no."""

from __future__ import annotations

import math
from typing import Any

from processor.tools.bench.domain import _realtime_figures, _Samples, _stored_per_s
from processor.tools.bench.report import _bounded

SECONDS = 60.0


def _samples(lag_at: list[float], stored_per_s: float = 2000.0) -> _Samples:
    samples = _Samples()
    for t, lag in enumerate(lag_at):
        samples.t.append(float(t))
        samples.lag.append(lag)
        samples.scrapes.append((float(t), {"processor_positions_inserted_total": stored_per_s * t}))
    return samples


def _figures(samples: _Samples, drained_s: float = 2.0) -> dict[str, float]:
    start: dict[str, Any] = {"processor_notices_published_total": 0.0}
    fed: dict[str, Any] = {"processor_notices_published_total": 9.0 * SECONDS}
    return _realtime_figures(
        start, fed, fed, samples, sent=120_000, fed_s=SECONDS, drained_s=drained_s
    )


def _sawtooth(rise_per_s: float) -> list[float]:
    """A lag climbing for 4 s then dropping back (a batch cycle), its troughs rising."""
    return [rise_per_s * t + 10.0 * (t % 4) for t in range(int(SECONDS))]


def test_flat_troughs_drained_in_time_are_bounded() -> None:
    figures = _figures(_samples(_sawtooth(0.0)))
    assert figures["bounded"] == 1.0
    assert abs(figures["lag_slope_per_s"]) < 0.01


def test_rising_troughs_are_not_bounded() -> None:
    figures = _figures(_samples(_sawtooth(1.0)))
    assert figures["lag_slope_per_s"] > 0.9
    assert figures["bounded"] == 0.0


def test_a_slow_drain_or_none_is_not_bounded() -> None:
    assert _figures(_samples(_sawtooth(0.0)), drained_s=20.0)["bounded"] == 0.0
    assert _figures(_samples(_sawtooth(0.0)), drained_s=math.nan)["bounded"] == 0.0


def test_too_few_samples_to_see_a_trend_are_not_bounded() -> None:
    samples = _samples([0.0] * 33)  # nothing after the first half but 3 s
    assert _figures(samples)["bounded"] == 0.0


def test_the_feed_is_measured_over_the_judged_half() -> None:
    samples = _samples(_sawtooth(0.0), stored_per_s=1500.0)
    assert _stored_per_s(samples.scrapes, since=30.0, until=60.0) == 1500.0
    figures = _figures(samples)
    assert figures["positions_per_s_judged"] == 1500.0
    assert _bounded(figures, 2000.0).startswith("yes (but fed 1,500/s")
    assert _bounded(_figures(_samples(_sawtooth(0.0))), 2000.0) == "yes"
