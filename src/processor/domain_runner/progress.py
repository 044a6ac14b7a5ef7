"""How far the domain stage has handled each device's track (`telemetry.domain_progress`).

Invariant: a device's `handled_to_ms` is at least the end of every window of it whose
outputs were committed, because it is raised in the same transaction, under the
device's lock. So a window that ends at or after it has nothing handled after it: the
in-order fast path's premise (later records are in later notices, not handled yet) holds
for it. A window that ends before it is a re-cut, whatever its records' arrival times
say — another instance, or a batch the core committed out of order, handled a later
window first — and takes the full path, which recomputes everything its records touch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from processor.domain_runner.notices import Window
from processor.storage.pool import DbConnection


async def handled_to(conn: DbConnection, devices: Iterable[str]) -> dict[str, int]:
    """Per device, the latest end of a window handled (absent: none yet)."""
    wanted = sorted(set(devices))
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT device_id, handled_to_ms FROM telemetry.domain_progress"
        " WHERE device_id = ANY($1::text[])",
        wanted,
    )
    return {r["device_id"]: r["handled_to_ms"] for r in rows}


def nothing_handled_after(progress: Mapping[str, int], window: Window) -> bool:
    """Whether no later window of the device has been handled yet."""
    done = progress.get(window.device_id)
    return done is None or done <= window.end_ms


async def mark_handled(conn: DbConnection, windows: Iterable[Window]) -> None:
    """Raise each device's mark to its window's end (in the window's transaction)."""
    ends: dict[str, int] = {}
    for w in windows:
        ends[w.device_id] = max(ends.get(w.device_id, w.end_ms), w.end_ms)
    if not ends:
        return
    devices = sorted(ends)
    await conn.execute(
        "INSERT INTO telemetry.domain_progress (device_id, handled_to_ms)"
        " SELECT * FROM unnest($1::text[], $2::bigint[])"
        " ON CONFLICT (device_id) DO UPDATE SET handled_to_ms ="
        " greatest(telemetry.domain_progress.handled_to_ms, EXCLUDED.handled_to_ms)",
        devices,
        [ends[d] for d in devices],
    )
