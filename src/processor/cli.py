"""`processor <command>`: thin entry points over the layers."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.table import Table

from processor.core.logging import configure_logging
from processor.core.settings import Settings, SettingsError, load_settings
from processor.core.timeparse import format_ms
from processor.directus.command import directus_app

T = TypeVar("T")
app = typer.Typer(
    name="processor",
    help="Stream and domain engine of a GPS tracking platform for motorsport events.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dlq_app = typer.Typer(help="Inspect and requeue dead letters.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
event_app = typer.Typer(
    help="Event configuration in the Directus tables (development and demos).",
    no_args_is_help=True,
)
app.add_typer(event_app, name="event")
app.add_typer(directus_app, name="directus")
console = Console()


def _settings() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_format, settings.log_level)
    return settings


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@app.command()
def run(
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Exit once the stream is drained.")
    ] = False,
    with_domain: Annotated[
        bool,
        typer.Option(
            "--with-domain",
            help="Also run the domain stage in this process (supervised: its failures never"
            " stop the pipeline).",
        ),
    ] = False,
) -> None:
    """Consume the stream into telemetry.positions until SIGTERM/SIGINT."""
    from processor.app import run_processor

    settings = _settings()
    raise typer.Exit(_run(run_processor(settings, until_idle=until_idle, with_domain=with_domain)))


@app.command()
def domain(
    until_idle: Annotated[
        bool,
        typer.Option(
            "--until-idle", help="Exit once no notice is left (exit 1 if a batch failed)."
        ),
    ] = False,
) -> None:
    """Run the domain stage: committed notices in, timing records and attributes out."""
    from processor.app import run_domain_stage

    settings = _settings()
    raise typer.Exit(_run(run_domain_stage(settings, until_idle=until_idle)))


@event_app.command("load")
def event_load(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            exists=True,
            dir_okay=False,
            help="An event file in the sample-event shape (default: the bundled sample).",
        ),
    ] = None,
) -> None:
    """Upsert an event file's rows (events, devices, entries, stages, geofences) by id.

    For machines without Directus: the tables must exist already. Safe to repeat.
    """
    import asyncpg
    import msgspec

    from processor.tools.event_loader import TABLES, load_event_rows, read_event_file

    settings = _settings()
    try:
        doc = read_event_file(file)
    except (OSError, msgspec.DecodeError) as exc:
        typer.echo(f"cannot read the event file: {exc}", err=True)
        raise typer.Exit(2) from None

    async def go() -> dict[str, int] | list[str]:
        conn = await asyncpg.connect(settings.database_url.get_secret_value())
        try:
            missing = [
                r["t"]
                for r in await conn.fetch(
                    "SELECT t FROM unnest($1::text[]) AS t"
                    " WHERE to_regclass('public.' || t) IS NULL",
                    [table for table, _, _ in TABLES],
                )
            ]
            if missing:
                return missing
            return await load_event_rows(conn, doc)
        finally:
            await conn.close()

    try:
        outcome = _run(go())
    except (OSError, asyncpg.PostgresError) as exc:
        typer.echo(f"event load failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    if isinstance(outcome, list):
        typer.echo(
            f"the Directus tables {', '.join('public.' + t for t in outcome)} do not exist: "
            "apply the Directus snapshot or src/processor/storage/directus_fixture.sql first",
            err=True,
        )
        raise typer.Exit(1)
    counts = ", ".join(f"{table} {n}" for table, n in outcome.items())
    console.print(f"loaded {file or 'the sample event'}: {counts} (upserted by id)")


def _time_option(value: str, name: str) -> int:
    from processor.core.timeparse import TimeError, parse_time_ms

    try:
        return parse_time_ms(value)
    except TimeError as exc:
        raise typer.BadParameter(f"{exc} (e.g. 2026-05-01T06:00:00Z)", param_hint=name) from None


def _replay(**kwargs: Any) -> None:
    import asyncpg

    from processor.tools.replay import ReplayError, run_replay

    settings = _settings()
    if kwargs.get("geofences_file") is not None and not kwargs.get("dry_run"):
        typer.echo(
            "--geofences is a what-if and needs --dry-run: records written from a layout that"
            " is not the Directus one would be undone by the live stage. To change the layout,"
            " edit it in Directus (or `processor event load --file`), then recompute.",
            err=True,
        )
        raise typer.Exit(2)
    try:
        _run(run_replay(settings.database_url.get_secret_value(), console, **kwargs))
    except ReplayError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    except (OSError, asyncpg.PostgresError) as exc:
        typer.echo(f"failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None


_GEOFENCES_HELP = "A what-if layout: an event file whose stages and geofences replace Directus's."


@app.command()
def replay(
    device: Annotated[str, typer.Option("--device", help="The tracker's IMEI (device_id).")],
    since: Annotated[str, typer.Option("--since", help="ISO-8601 time with offset.")],
    until: Annotated[str, typer.Option("--until", help="ISO-8601 time with offset (excluded).")],
    entry: Annotated[
        int | None, typer.Option("--entry", help="Only this entry id (default: all the device's).")
    ] = None,
    geofences: Annotated[
        Path | None, typer.Option("--geofences", exists=True, dir_okay=False, help=_GEOFENCES_HELP)
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the differences, write nothing.")
    ] = False,
) -> None:
    """Recompute one device's outputs from a time range on, from stored positions: timing
    records in the range, alerts from its start, the results whose timing changed."""
    _replay(
        device_id=device,
        entry_id=entry,
        since_ms=_time_option(since, "--since"),
        until_ms=_time_option(until, "--until"),
        geofences_file=geofences,
        dry_run=dry_run,
    )


@app.command()
def recompute(
    stage: Annotated[int, typer.Option("--stage", help="Stage id.")],
    geofences: Annotated[
        Path | None, typer.Option("--geofences", exists=True, dir_okay=False, help=_GEOFENCES_HELP)
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the differences, write nothing.")
    ] = False,
    republish: Annotated[
        bool,
        typer.Option(
            "--republish",
            help="Delete the stage's automatic rows and write them all again (after rows"
            " were deleted by hand in Directus).",
        ),
    ] = False,
) -> None:
    """Recompute a stage's timing records, penalties, results, ranking and its entries'
    alerts (after a geofence, rule or official's change)."""
    if republish and dry_run:
        typer.echo("--republish writes; it cannot be combined with --dry-run", err=True)
        raise typer.Exit(2)
    _replay(stage_id=stage, geofences_file=geofences, dry_run=dry_run, republish=republish)


@app.command()
def dispatch(
    until_empty: Annotated[
        bool, typer.Option(help="Exit once every outbox event is delivered (scripts, tests).")
    ] = False,
) -> None:
    """Deliver the outbox to Directus (`processor_events`), in order, for ever.

    Needs PROCESSOR_DIRECTUS_URL and PROCESSOR_DIRECTUS_TOKEN. `run --with-domain` and
    `domain` run the same dispatcher when those are set; one process delivers at a time.
    """
    from processor.app import run_dispatcher

    raise typer.Exit(_run(run_dispatcher(_settings(), until_empty=until_empty)))


@app.command()
def gateway(
    port: Annotated[
        int | None, typer.Option(help="Port (default PROCESSOR_GATEWAY_PORT).", min=0)
    ] = None,
) -> None:
    """Push live positions and result, penalty and alert changes to browsers (WebSocket,
    SSE) and serve the race-control page; reads Redis (and PostgreSQL for snapshots)."""
    from processor.gateway.command import run_gateway

    raise typer.Exit(_run(run_gateway(_settings(), port=port)))


@app.command()
def migrate(
    create_database: Annotated[
        bool, typer.Option("--create-database", help="Create the database first if missing.")
    ] = False,
) -> None:
    """Apply the telemetry schema migrations (safe to run concurrently)."""
    import asyncpg

    from processor.storage.migrate import MigrationError, ensure_database
    from processor.storage.migrate import migrate as do_migrate
    from processor.storage.pool import single_connection

    settings = _settings()
    url = settings.database_url.get_secret_value()

    async def go() -> None:
        if create_database:
            parts = urlsplit(url)
            database = parts.path.lstrip("/") or "postgres"
            admin = urlunsplit(parts._replace(path="/postgres"))
            if await ensure_database(admin, database, settings.database_mode):
                console.print(f"created database [bold]{database}[/]")
        async with single_connection(url, settings.db_connect_timeout_s) as conn:
            report = await do_migrate(conn, settings)
        console.print(f"mode: [bold]{report.mode}[/]")
        for label in report.applied:
            console.print(f"  applied  {label}")
        for label in report.skipped:
            console.print(f"  skipped  {label} (not for {report.mode})")
        console.print(f"  {len(report.already)} already applied")
        for change in report.policies:
            console.print(
                f"  policy   {change.line()}", markup=False, highlight=False, soft_wrap=True
            )

    try:
        _run(go())
    except MigrationError as exc:
        typer.echo(f"migrate failed: {exc}", err=True)
        raise typer.Exit(1) from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        typer.echo(f"migrate failed: {type(exc).__name__}: {exc}".splitlines()[0], err=True)
        raise typer.Exit(1) from None


@app.command()
def config() -> None:
    """Print the effective settings, secrets redacted."""
    settings = _settings()
    table = Table("setting", "value", title="effective configuration")
    table.columns[1].overflow = "fold"
    for key, value in settings.redacted().items():
        table.add_row(key, str(value))
    console.print(table)


@dlq_app.command("list")
def dlq_list(
    count: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    reason: Annotated[str | None, typer.Option(help="Only this reason code.")] = None,
) -> None:
    """List dead letters, newest first, with the count by reason."""
    from processor.stream.client import connect
    from processor.tools.dlq import list_dead_letters, reasons

    settings = _settings()

    async def go() -> None:
        redis = connect(settings)
        try:
            views = await list_dead_letters(redis, settings.dlq_stream, count=count, reason=reason)
            by_reason = await reasons(redis, settings.dlq_stream)
        finally:
            await redis.aclose()
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(by_reason.items())) or "none"
        console.print(f"dead letters in [bold]{settings.dlq_stream}[/] by reason: {summary}")
        table = Table("id", "reason", "detail", "source id", "deliveries", "failed at")
        for v in views:
            table.add_row(
                v.id,
                v.reason,
                v.detail[:80],
                v.source_id,
                str(v.deliveries),
                format_ms(v.failed_at_ms) if v.failed_at_ms else "",
            )
        console.print(table)

    _run(go())


@dlq_app.command("show")
def dlq_show(entry_id: Annotated[str, typer.Argument(help="Dead-letter entry ID.")]) -> None:
    """Show one dead letter with its original fields."""
    from processor.stream.client import connect
    from processor.tools.dlq import show_dead_letter

    settings = _settings()

    async def go() -> int:
        redis = connect(settings)
        try:
            view = await show_dead_letter(redis, settings.dlq_stream, entry_id)
        finally:
            await redis.aclose()
        if view is None:
            console.print(f"no dead letter {entry_id}")
            return 1
        console.print(f"[bold]{view.id}[/]  reason={view.reason}  source={view.source_id}")
        console.print(f"detail: {view.detail}")
        console.print(f"deliveries={view.deliveries} consumer={view.consumer}")
        for key, value in view.original.items():
            console.print(
                f"{key.decode('utf-8', 'replace')}: {value[:2000].decode('utf-8', 'replace')}"
            )
        return 0

    raise typer.Exit(_run(go()))


@dlq_app.command("requeue")
def dlq_requeue(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter IDs (default: all).")] = None,
    reason: Annotated[str | None, typer.Option(help="Only this reason code.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 10_000,
) -> None:
    """Put dead letters back on the input stream (after fixing their cause)."""
    from processor.stream.client import connect
    from processor.tools.dlq import requeue

    settings = _settings()

    async def go() -> int:
        redis = connect(settings)
        try:
            return await requeue(
                redis, settings.dlq_stream, settings.stream, ids, reason=reason, limit=limit
            )
        finally:
            await redis.aclose()

    moved = _run(go())
    console.print(f"requeued {moved} entries onto {settings.stream}")


@app.command()
def bench(
    entries: Annotated[int, typer.Option(help="Entries in the pre-filled stream.")] = 200_000,
    devices: Annotated[int, typer.Option(help="Simulated devices.")] = 2_000,
    latency_seconds: Annotated[
        float, typer.Option(help="Length of the latency run (0: skip).")
    ] = 60.0,
    latency_rate: Annotated[int, typer.Option(help="Positions/s in the latency run.")] = 2_000,
    repeats: Annotated[int, typer.Option(help="Repeats of the write measurements.")] = 2,
    output: Annotated[Path, typer.Option(help="Results as JSON.")] = Path(
        "bench/results/latest.json"
    ),
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 1,
    domain_seconds: Annotated[
        float,
        typer.Option(help="Length of the domain stage's real-time run (0: skip the section)."),
    ] = 60.0,
    domain_rate: Annotated[
        int, typer.Option(help="Positions/s in the domain stage's run.")
    ] = 2_000,
    domain_in_run: Annotated[
        bool,
        typer.Option(
            "--domain-in-run",
            help="Run the domain stage inside `processor run --with-domain` instead of as its"
            " own `processor domain` process (the production layout at load).",
        ),
    ] = False,
    domain_mass_start: Annotated[
        bool,
        typer.Option(
            "--domain-mass-start",
            help="All cars of the domain run wait a minute at the start line, then start"
            " (results for every car; give --domain-seconds 130 to judge the racing half),"
            " instead of joining the routes part-way.",
        ),
    ] = False,
    citus_url: Annotated[
        str | None,
        typer.Option(
            "--citus-url",
            help="A Citus coordinator's admin URL: the writer and the processor are measured"
            " there too (a scratch database on every node) and compared with this run's plain"
            " figures.",
        ),
    ] = None,
) -> None:
    """Measure throughput (vs a raw COPY ceiling and a naive peer), latency and the domain
    stage (keeping up in real time; the core beside a failing one), in one run."""
    from processor.tools.bench.report import print_report
    from processor.tools.bench.run import BenchConfig, run_bench

    _settings()
    config = BenchConfig(
        entries=entries,
        devices=devices,
        seed=seed,
        latency_seconds=latency_seconds,
        latency_rate=latency_rate,
        repeats=repeats,
        output=output,
        domain_seconds=domain_seconds,
        domain_rate=domain_rate,
        domain_separate=not domain_in_run,
        domain_extras_start="start_line" if domain_mass_start else "part_way",
        citus_url=citus_url,
    )
    result = _run(run_bench(config, lambda text: console.print(f"[dim]· {text}[/]")))
    print_report(result, console)
    console.print(f"results written to {output}")


@app.command()
def status(
    watch: Annotated[
        float | None,
        typer.Option("--watch", min=0.5, help="Refresh every N seconds until Ctrl-C."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="The snapshot as JSON (with --watch: one line each).")
    ] = False,
) -> None:
    """Stream, group, consumers, dead letters and stored positions, from Redis and PostgreSQL.

    Exits 1 when a store could not be read (the snapshot still shows the other one).
    """
    from processor.tools.status import show_status

    settings = _settings()
    try:
        code = _run(show_status(settings, console, watch_s=watch, as_json=json_output))
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


@app.command()
def leaderboard(
    stage: Annotated[int | None, typer.Option("--stage", help="Stage id: its results.")] = None,
    event: Annotated[
        int | None, typer.Option("--event", help="Event id: its classification.")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.5, help="Seconds.")] = 5.0,
    json_output: Annotated[bool, typer.Option("--json", help="The board as JSON.")] = False,
) -> None:
    """Stage results (ranks, gaps, splits) or the event classification, from PostgreSQL."""
    from processor.tools.leaderboard import show_leaderboard

    if (stage is None) == (event is None):
        raise typer.BadParameter("give either --stage or --event", param_hint="--stage/--event")
    settings = _settings()
    try:
        code = _run(
            show_leaderboard(
                settings,
                console,
                stage=stage,
                event=event,
                watch_s=interval if watch else None,
                as_json=json_output,
            )
        )
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


@app.command()
def demo(
    devices: Annotated[int, typer.Option(min=1, help="Simulated cars.")] = 20,
    speed: Annotated[str, typer.Option(help="realtime, max, or xN (e.g. x10).")] = "x10",
    duration_s: Annotated[float, typer.Option(min=1.0, help="Stop after this long.")] = 60.0,
    stream: Annotated[
        str, typer.Option(help="Stream key of the demo (never the real stream).")
    ] = "demo:positions",
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 1,
    start_interval_s: Annotated[
        float, typer.Option(min=0.0, help="Gap between starting cars (simulated time).")
    ] = 15.0,
    duplicate_rate: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="Re-sent copies per record.")
    ] = 0.02,
    offline_rate: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="Records uploaded late, newest first.")
    ] = 0.03,
    nofix_rate: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="Records without a GPS fix.")
    ] = 0.01,
    malformed_rate: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="Records replaced by contract violations.")
    ] = 0.005,
) -> None:
    """Run the processor fed by the simulator, in-process, with a live view, then summarise."""
    import os

    from processor.tools.demo import DemoError, DemoOptions, demo_settings, run_demo
    from processor.tools.simulator.sink import Pace

    try:
        settings = demo_settings(_settings(), stream)
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if "PROCESSOR_LOG_LEVEL" not in os.environ:  # the live view says it all; keep warnings
        configure_logging(settings.log_format, "WARNING")
    try:
        Pace.parse(speed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--speed") from None
    options = DemoOptions(
        devices=devices,
        speed=speed,
        duration_s=duration_s,
        seed=seed,
        start_interval_s=start_interval_s,
        duplicate_rate=duplicate_rate,
        offline_rate=offline_rate,
        nofix_rate=nofix_rate,
        malformed_rate=malformed_rate,
    )
    try:
        _run(run_demo(settings, options, console, handle_signals=True))
    except DemoError as exc:
        typer.echo(f"demo: {exc}", err=True)
        typer.echo("start the services with scripts/bootstrap.sh", err=True)
        raise typer.Exit(1) from None


def _register_optional() -> None:
    """Tools that live in their own modules register here."""
    try:
        from processor.tools.simulator.cli import simulate
    except ImportError:  # pragma: no cover - the simulator package is part of the wheel
        return
    app.command("simulate")(simulate)
    from processor.tools.backfill_cli import backfill_app
    from processor.tools.mappings_cli import mappings_app

    app.add_typer(mappings_app, name="mappings")
    app.add_typer(backfill_app, name="backfill")


_register_optional()


def main() -> None:  # pragma: no cover
    sys.exit(app())
