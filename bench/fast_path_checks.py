"""Time per window of the domain stage's fast-path checks, pure Python, no services.

Run from the repository root: `.venv/bin/python bench/fast_path_checks.py`. Drives the
sample event with the simulator (no noise), cuts each car's track into 30-second windows
(what a lagging batch hands the stage per device) and times, per window, the three checks
`DomainOutputs.prefilter` makes: `in_order`, `appended_without_hits` (timing) and
`Race.ordinary` (alerts, including the near-a-route question). Prints ms per window.
"""

from __future__ import annotations

import time
from collections import defaultdict

from processor.core.contract import decode_entry
from processor.core.position import Position
from processor.domain.attributes import MappingTable
from processor.domain.config import config_from_event_file
from processor.domain.geofences import GeofenceIndex
from processor.domain.timing import DEFAULT_SETTINGS
from processor.domain_runner.config_source import EntryRef, Snapshot
from processor.domain_runner.notices import Window
from processor.domain_runner.outputs import appended_without_hits, in_order
from processor.domain_runner.race import Race
from processor.tools.simulator.event import load_event
from processor.tools.simulator.generator import GeneratorConfig, Simulation

WINDOW_FIXES = 30
BEFORE_FIXES = 25


def main() -> None:
    event = load_event()
    config, errors = config_from_event_file(event)
    assert not errors, errors
    index = GeofenceIndex.from_config(config)
    tracks: dict[str, list[Position]] = defaultdict(list)
    for entry in Simulation(event, GeneratorConfig(devices=5, seed=1)).entries():
        decoded = decode_entry(f"{entry.received_ms}-0", entry.fields())
        if isinstance(decoded, Position):
            tracks[decoded.device_id].append(decoded)
    entries = {
        d: [EntryRef(i + 1, 1, 100 + i, "crew", "T1", "confirmed", d, "FMB920")]
        for i, d in enumerate(sorted(tracks))
    }
    snapshot = Snapshot(config, index, entries, {}, MappingTable([]), [], "bench")
    race = Race()
    cases = []
    for device, track in tracks.items():
        track.sort(key=lambda p: p.ts_ms)
        for i in range(BEFORE_FIXES, len(track) - WINDOW_FIXES, 37):
            window = Window(device, track[i].ts_ms, track[i + WINDOW_FIXES - 1].ts_ms)
            cases.append((window, track[i - BEFORE_FIXES : i + WINDOW_FIXES]))
    started = time.perf_counter()
    for window, records in cases:
        in_order(records, window, None)
        appended_without_hits(records, window, index, DEFAULT_SETTINGS)
        race.ordinary(snapshot, entries[window.device_id], window, records)
    elapsed = time.perf_counter() - started
    print(
        f"{len(cases)} windows of {WINDOW_FIXES} fixes: {elapsed / len(cases) * 1000:.2f} ms each"
    )


if __name__ == "__main__":
    main()
