"""Memory of the domain's geometry memos when full, no services.

Run from the repository root: `.venv/bin/python bench/memo_memory.py`. Fills the
projection memo (`LocalProjection.to_xy`) with distinct points and the segment memo
(`GeofenceIndex.seen`'s kind) with segments between them, as a lagging batch would, and
prints what each holds (tracemalloc) at its capacity.
"""

from __future__ import annotations

import random
import tracemalloc

from processor.domain.geofences import SEGMENTS_MEMO, SegmentKey
from processor.domain.memo import Memo
from processor.domain.projection import PROJECTED_MEMO, LocalProjection


def main() -> None:
    rng = random.Random(1)
    tracemalloc.start()
    projection = LocalProjection(41.4, 2.2)
    points = [
        projection.to_xy(2.2 + rng.random() * 0.1, 41.4 + rng.random() * 0.1)
        for _ in range(PROJECTED_MEMO - 1)  # one short of the capacity: nothing forgotten
    ]
    projected = tracemalloc.get_traced_memory()[0]
    segments: Memo[SegmentKey, tuple[()]] = Memo(SEGMENTS_MEMO)
    for i in range(min(SEGMENTS_MEMO, len(points)) - 3):
        segments.put((points[i], points[i + 1], points[i + 2]), ())
    both = tracemalloc.get_traced_memory()[0]
    mb = 1024 * 1024
    print(f"projection memo, {PROJECTED_MEMO - 1:,} points: {projected / mb:.1f} MB")
    print(f"segment memo, {len(segments):,} segments: {(both - projected) / mb:.1f} MB")


if __name__ == "__main__":
    main()
