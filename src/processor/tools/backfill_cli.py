"""`processor backfill attributes`: rebuild decoded attributes from stored positions.

Mounted by the main CLI as the `backfill` group; the work is in
`domain_runner/backfill.py`. This module parses the options, shows the plan, a progress
bar (positions, rate, ETA) and the outcome, and turns SIGINT/SIGTERM into a clean stop
after the page in hand (its checkpoint committed: the same command resumes).
"""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from processor.core.logging import configure_logging
from processor.core.settings import Settings, SettingsError, load_settings
from processor.core.timeparse import TimeError, format_ms, parse_time_ms
from processor.domain_runner.attribute_audit import AttributeAudit
from processor.domain_runner.backfill import (
    Backfill,
    BackfillError,
    Outcome,
    Plan,
    Sample,
    Scope,
    Tally,
)

backfill_app = typer.Typer(
    help="Recompute derived data from stored positions (never touching positions).",
    no_args_is_help=True,
)
console = Console()


class RateColumn(ProgressColumn):
    """Positions per second, as rich measures the task's speed."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} pos/s", style="progress.data.speed")


def _settings() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_format, settings.log_level)
    return settings


def _time(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time_ms(value)
    except TimeError as exc:
        raise typer.BadParameter(f"{exc} (e.g. 2026-05-01T06:00:00Z)", param_hint=name) from None


@backfill_app.command("attributes")
def attributes(
    model: Annotated[
        str | None, typer.Option("--model", help="Only devices of this model (public.devices).")
    ] = None,
    device: Annotated[
        list[str] | None,
        typer.Option("--device", help="Only this device (IMEI); repeatable."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="From this time (ISO-8601 with offset).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Up to this time, excluded (ISO-8601).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Count what would change, show a sample; write nothing."),
    ] = False,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate",
            min=0.0,
            help="Positions per second at most (0: no limit). Default: PROCESSOR_BACKFILL_RATE.",
        ),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option(
            "--batch", min=1, help="Positions per transaction (PROCESSOR_BACKFILL_BATCH)."
        ),
    ] = None,
    samples: Annotated[
        int, typer.Option("--samples", min=0, help="Changed positions to show (old → new).")
    ] = 5,
    if_changed: Annotated[
        bool,
        typer.Option(
            "--if-changed",
            help="Do nothing when the last finished run of this scope used the current"
            " mappings (for a timer or cron: a mapping edit starts the backfill).",
        ),
    ] = False,
    settle_s: Annotated[
        float | None,
        typer.Option(
            "--settle-s",
            min=0.0,
            help="Wait this long before writing, so every running domain stage has re-read"
            " the mappings (default: PROCESSOR_CONFIG_REFRESH_S + 1).",
        ),
    ] = None,
) -> None:
    """Recompute telemetry.position_attributes from telemetry.positions with the live
    decoder and the current Directus mappings. Resumable: after a crash or Ctrl-C, the
    same command continues from its checkpoint."""
    settings = _settings()
    scope = Scope(
        model=model,
        devices=tuple(device or ()),
        since_ms=_time(since, "--since"),
        until_ms=_time(until, "--until"),
    )
    if (
        scope.since_ms is not None
        and scope.until_ms is not None
        and scope.since_ms >= scope.until_ms
    ):
        raise typer.BadParameter("--since must be before --until", param_hint="--since")
    options: dict[str, Any] = {
        "dry_run": dry_run,
        "rate": settings.backfill_rate if rate is None else rate,
        "batch": batch or settings.backfill_batch,
        "samples": samples,
        "if_changed": if_changed,
        "settle_s": settings.config_refresh_s + 1 if settle_s is None else settle_s,
    }
    try:
        outcome = asyncio.run(_run(settings, scope, options))
    except BackfillError as exc:
        typer.echo(f"backfill: {exc}", err=True)
        raise typer.Exit(1) from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        typer.echo(f"backfill failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    _report(outcome, dry_run)
    raise typer.Exit(1 if outcome.interrupted else 0)


@backfill_app.command("bench")
def bench(
    positions: Annotated[
        int, typer.Option(min=1000, help="Stored positions to backfill.")
    ] = 100_000,
    devices: Annotated[int, typer.Option(min=1, help="Simulated devices.")] = 500,
    core_entries: Annotated[
        int, typer.Option(min=1000, help="Entries the core drains in each core run.")
    ] = 100_000,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="The backfill's rate beside the core (PROCESSOR_BACKFILL_RATE)."
        ),
    ] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Core runs alone (and as many beside).")] = 2,
    output: Annotated[Path, typer.Option(help="Results as JSON.")] = Path(
        "bench/results/backfill.json"
    ),
) -> None:
    """Measure the backfill's throughput, and the core's alone and beside a backfill at
    the default rate limit (own database and stream keys, dropped afterwards)."""
    from processor.tools.bench.backfill import BackfillBenchConfig, run_backfill_bench

    settings = _settings()
    config = BackfillBenchConfig(
        positions=positions,
        devices=devices,
        core_entries=core_entries,
        rate=settings.backfill_rate if rate is None else rate,
        repeats=repeats,
        output=output,
    )
    result = asyncio.run(
        run_backfill_bench(config, lambda text: console.print(f"[dim]· {text}[/]"))
    )
    f = result.figures
    table = Table("figure", "value", title="backfill benchmark")
    for label, value in f["backfill_positions_per_s"].items():
        table.add_row(f"backfill, no limit ({label})", f"{value:,.0f} positions/s")
    table.add_row("core alone", ", ".join(f"{v:,.0f}" for v in f["core_alone_positions_per_s"]))
    table.add_row(
        f"core beside a backfill at {config.rate:g}/s",
        ", ".join(f"{v:,.0f}" for v in f["core_beside_backfill_positions_per_s"]),
    )
    table.add_row(
        "backfill beside the core",
        ", ".join(f"{v:,.0f}" for v in f["backfill_beside_core_positions_per_s"]),
    )
    table.add_row("core beside / alone (medians)", f"{f['core_ratio_beside_vs_alone']:.3f}")
    table.add_row(
        "spread of the alone runs (noise, of the median)", f"{f['core_alone_spread']:.1%}"
    )
    console.print(table)
    console.print(f"results written to {output}")


async def _run(settings: Settings, scope: Scope, options: dict[str, Any]) -> Outcome:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    conn = await asyncpg.connect(
        settings.database_url.get_secret_value(),
        timeout=settings.db_connect_timeout_s,
        server_settings={"application_name": "processor-backfill"},
    )
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task_id: list[Any] = []

    def on_plan(plan: Plan, done_before: int) -> None:
        _show_plan(plan, scope, options)
        progress.start()
        task_id.append(
            progress.add_task(
                "dry run" if options["dry_run"] else "backfill",
                total=plan.total,
                completed=done_before,
            )
        )

    def on_progress(_: Tally, advanced: int) -> None:
        if task_id:
            progress.advance(task_id[0], advanced)

    try:
        return await Backfill(
            conn,
            scope,
            audit=AttributeAudit(),
            on_plan=on_plan,
            on_progress=on_progress,
            stop=stop,
            **options,
        ).run()
    finally:
        progress.stop()
        await conn.close()


def _show_plan(plan: Plan, scope: Scope, options: dict[str, Any]) -> None:
    what = []
    if scope.model:
        what.append(f"model {scope.model}")
    if scope.devices:
        what.append(f"devices {', '.join(sorted(set(scope.devices)))}")
    if scope.since_ms is not None:
        what.append(f"since {format_ms(scope.since_ms)}")
    if scope.until_ms is not None:
        what.append(f"until {format_ms(scope.until_ms)}")
    compressed = sum(1 for u in plan.units if u.compressed)
    units = (
        f"{len(plan.units)} chunks ({compressed} compressed)"
        if plan.mode == "timescale"
        else "one range (plain PostgreSQL)"
    )
    devices = len({i.device_id for i in plan.items})
    console.print(
        f"scope: {', '.join(what) or 'every stored position'}; storage: {plan.mode}, {units};"
        f" {devices} devices, {plan.total:,} positions; mappings digest {plan.version}"
    )
    rate = options["rate"]
    console.print(
        f"rate limit: {'none' if rate <= 0 else f'{rate:,.0f} positions/s'},"
        f" {options['batch']} positions per transaction"
    )
    for error in plan.errors:
        console.print(f"[yellow]skipped mapping[/] {error}", markup=True, highlight=False)


def _report(outcome: Outcome, dry_run: bool) -> None:
    tally = outcome.tally
    if outcome.up_to_date:
        console.print(
            f"up to date: the last finished run used mappings version {outcome.plan.version}"
        )
        return
    if outcome.restarted_because:
        console.print(f"started over: {outcome.restarted_because}")
    if outcome.resumed_from is not None:
        _unit, device, ts = outcome.resumed_from
        console.print(f"resumed after {device} at {format_ms(ts)} (the last checkpoint)")
    verb = "would be" if dry_run else ""
    table = Table("positions", "count", title="dry run: nothing written" if dry_run else None)
    table.add_row("scanned", f"{tally.scanned:,}")
    table.add_row(f"attributes {verb} added".replace("  ", " "), f"{tally.added:,}")
    table.add_row(f"attributes {verb} changed".replace("  ", " "), f"{tally.updated:,}")
    table.add_row(
        f"attributes {verb} removed (no mapping)".replace("  ", " "), f"{tally.deleted:,}"
    )
    table.add_row("unchanged", f"{tally.unchanged:,}")
    table.add_row("values left out (unfit for their mapping)", f"{tally.unfit:,}")
    console.print(table)
    console.print(
        f"{outcome.elapsed_s:.1f} s, {outcome.rate:,.0f} positions/s"
        + (" (resumed run: counts include the earlier part)" if outcome.resumed_from else "")
    )
    if tally.samples:
        console.print(_samples(tally.samples))
    if outcome.interrupted:
        console.print("[yellow]interrupted[/]: run the same command to resume from the checkpoint")


def _samples(samples: list[Sample]) -> Table:
    table = Table("device", "time", "attribute", "old", "new", title="sample of changes")
    table.columns[1].no_wrap = True
    for s in samples:
        old = s.old or {}
        new = s.new or {}
        names = sorted(set(old) | set(new))
        changed = [
            n for n in names if n not in old or n not in new or _shown(old[n]) != _shown(new[n])
        ]
        if s.new is None:
            table.add_row(s.device_id, format_ms(s.ts_ms), "(row removed)", _shown(old), "—")
            continue
        if not changed:
            table.add_row(s.device_id, format_ms(s.ts_ms), "(mapping version only)", "", "")
        for n in changed:
            table.add_row(
                s.device_id,
                format_ms(s.ts_ms),
                n,
                _shown(old[n]) if n in old else "—",
                _shown(new[n]) if n in new else "—",
            )
    return table


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, str):
        return repr(value)
    return str(value)
