"""A million distinct devices: the state keeps to its configured bounds, and so does RSS."""

from __future__ import annotations

import gc

import psutil

from processor.core.position import Position
from processor.state.devices import DeviceState

MAX_DEVICES = 100_000
DEDUPE_WINDOW = 200_000


def test_a_million_devices_stay_within_the_configured_bound() -> None:
    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    state = DeviceState(MAX_DEVICES, DEDUPE_WINDOW)
    peak = 0
    samples: dict[int, int] = {}
    for i in range(1_000_000):
        state.observe(
            Position(
                device_id=f"35630704{i:07d}",
                ts_ms=1_777_629_600_000 + i,
                received_at_ms=1_777_629_600_000 + i,
                latitude=54.6,
                longitude=25.2,
                fix_valid=True,
                stream_id=f"{i}-0",
            )
        )
        if i % 100_000 == 99_999:
            samples[i + 1] = process.memory_info().rss - before
            peak = max(peak, samples[i + 1])
    assert len(state) == MAX_DEVICES
    assert state.evictions == 1_000_000 - MAX_DEVICES
    assert len(state._recent) <= DEDUPE_WINDOW
    # Full state (100k devices + 200k recent keys) costs well under 100 MB; the growth
    # stops once the bounds are reached instead of following the number of devices.
    assert peak < 100 * 1024 * 1024, f"state grew RSS by {peak / 2**20:.0f} MB"
    flat = samples[1_000_000] - samples[300_000]
    assert flat < 16 * 1024 * 1024, f"RSS kept growing after the bound: {flat / 2**20:.0f} MB"
    print(f"RSS growth with {MAX_DEVICES} devices in state: {peak / 2**20:.1f} MB")
