"""`processor replay` and `processor recompute`: the commands, and how they show it.

The recompute itself is a product module (`processor.domain_runner.recompute`): the
live code over a range chosen by hand — timing, alerts, penalties, results, rankings.
Here: connect, load the configuration (or a what-if layout), run it, and render its
report — the timing differences (added, removed, re-timed with old → new and Δ,
updated), then the alert differences, then one summary line.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from rich.console import Console
from rich.table import Table

from processor.core.timeparse import format_ms
from processor.domain.config import DomainConfig
from processor.domain_runner.config_source import Snapshot
from processor.domain_runner.recompute import (
    ReplayError,
    ReplayReport,
    load_snapshot,
    recompute_stage,
    replay_device,
)

__all__ = [
    "ReplayError",
    "ReplayReport",
    "load_snapshot",
    "recompute_stage",
    "render_report",
    "replay_device",
    "run_replay",
]


# --- output ---------------------------------------------------------------------------


def render_report(report: ReplayReport, snapshot: Snapshot, console: Console) -> None:
    """The timing and alert differences as tables, then one summary line."""
    for error in report.config_errors:
        console.print(f"[yellow]configuration row skipped:[/] {error}")
    numbers = {e.id: e.number for refs in snapshot.entries_by_device.values() for e in refs}
    names = _geofence_names(snapshot.config)
    verb = "would change" if report.dry_run else "changed"
    console.print(
        f"{report.scope}: {format_ms(report.span[0])} .. {format_ms(report.span[1])}, "
        f"{report.devices} device(s), {report.entries} entry(ies), "
        f"{report.fixes} stored position(s)"
    )
    if report.changes:
        table = Table(title=f"timing records that {verb}")
        for column in ("change", "stage", "entry", "geofence", "kind", "old crossed_at"):
            table.add_column(column)
        table.add_column("new crossed_at")
        table.add_column("Δ ms", justify="right")
        order = {"removed": 0, "re-timed": 1, "updated": 2, "added": 3}
        for c in sorted(report.changes, key=lambda c: (c.stage, c.at_ms, c.entry, order[c.change])):
            style = {"added": "green", "removed": "red", "re-timed": "yellow"}.get(c.change, "")
            delta = c.delta_ms
            table.add_row(
                f"[{style}]{c.change}[/]" if style else c.change,
                str(c.stage),
                f"#{numbers[c.entry]} ({c.entry})" if c.entry in numbers else str(c.entry),
                names.get(c.geofence, str(c.geofence)),
                c.kind,
                format_ms(c.old_ms) if c.old_ms is not None else "",
                format_ms(c.new_ms) if c.new_ms is not None else "",
                f"{delta:+,d}" if delta is not None else "",
            )
        console.print(table)
    if report.alerts:
        console.print(_alerts_table(report, numbers, verb))
    summary = (
        f"{report.count('added')} added, {report.count('removed')} removed, "
        f"{report.count('re-timed')} re-timed, {report.count('updated')} updated, "
        f"{report.unchanged} unchanged; {report.manual} manual record(s) in range, never touched"
    )
    console.print(
        f"alerts: {report.count_alerts('added')} added, {report.count_alerts('removed')}"
        f" removed, {report.count_alerts('updated')} updated"
    )
    if report.dry_run:
        console.print(f"{summary}. [bold]dry run[/]: nothing written")
    else:
        console.print(f"{summary}. written, one transaction per device")


def _alerts_table(report: ReplayReport, numbers: dict[int, int], verb: str) -> Table:
    table = Table(title=f"alerts that {verb}")
    for column in ("change", "stage", "entry", "kind", "severity", "started", "ended"):
        table.add_column(column)
    order = {"removed": 0, "updated": 1, "added": 2}
    for a in sorted(report.alerts, key=lambda a: (a.started_ms, a.entry, a.kind, order[a.change])):
        style = {"added": "green", "removed": "red"}.get(a.change, "")
        table.add_row(
            f"[{style}]{a.change}[/]" if style else a.change,
            "" if a.stage is None else str(a.stage),
            f"#{numbers[a.entry]} ({a.entry})" if a.entry in numbers else str(a.entry),
            a.kind,
            a.severity,
            format_ms(a.started_ms),
            format_ms(a.ended_ms) if a.ended_ms is not None else "open",
        )
    return table


def _geofence_names(config: DomainConfig) -> dict[int, str]:
    return {g.id: f"{g.name} ({g.id})" if g.name else str(g.id) for g in config.geofences}


# --- commands -------------------------------------------------------------------------


async def run_replay(
    database_url: str,
    console: Console,
    *,
    device_id: str | None = None,
    entry_id: int | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    stage_id: int | None = None,
    geofences_file: Path | None = None,
    dry_run: bool = True,
    republish: bool = False,
) -> ReplayReport:
    """`processor replay` (a device and a range) or `processor recompute` (a stage)."""
    conn = await asyncpg.connect(database_url)
    try:
        snapshot = await load_snapshot(conn, geofences_file)
        if stage_id is not None:
            report = await recompute_stage(
                conn, snapshot, stage_id, dry_run=dry_run, republish=republish
            )
        elif device_id is None or since_ms is None or until_ms is None:
            raise ReplayError("a replay needs a device, --since and --until")
        else:
            report = await replay_device(
                conn, snapshot, device_id, (since_ms, until_ms), entry_id=entry_id, dry_run=dry_run
            )
    finally:
        await conn.close()
    render_report(report, snapshot, console)
    return report
