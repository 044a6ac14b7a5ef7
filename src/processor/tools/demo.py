"""`processor demo`: the processor fed by the simulator, in one process, with a live view.

It is the README's first command, so it must show the whole story in a minute on a fresh
machine: the database is created and migrated, the sample event's cars drive (sped up,
with their times shifted to now), a few faults make duplicates, late uploads and dead
letters visible, and at the end the stored rows are queried the way a user would.

It writes to a stream of its own (`demo:positions` by default), so it never mixes with a
real stream; its positions go to the configured database's `telemetry.positions` and are
left there (the summary says how to query and how to remove them).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shlex
import signal
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from prometheus_client import CollectorRegistry, Histogram
from redis.exceptions import RedisError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from processor.app import open_pipeline
from processor.core.position import Position
from processor.core.settings import Settings, load_settings, redact_url
from processor.core.tasks import cancel_and_wait
from processor.observability.metrics import Metrics
from processor.observability.sampler import sample_once
from processor.pipeline.runner import Pipeline
from processor.storage.migrate import MigrationError, ensure_database, migrate
from processor.storage.writer import PositionWriter, WriteResult
from processor.stream.client import connect
from processor.tools.dlq import reasons
from processor.tools.simulator.event import load_event
from processor.tools.simulator.faults import FaultConfig
from processor.tools.simulator.generator import GeneratorConfig, Simulation, Tally
from processor.tools.simulator.sink import Pace, write_entries

DEMO_STREAM = "demo:positions"
VIEW_REFRESH_S = 0.5
SAMPLE_EVERY_S = 1.0  # XINFO for lag and pending: a view refresh does not need more
PROGRESS_EVERY_S = 3.0  # plain progress lines when the output is not a terminal
RATE_WINDOW_S = 5.0
CATCH_UP_S = 5.0  # after the simulator stops, let the processor drain what it wrote
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_LATENCY_SAMPLES_PER_BATCH = 256


class DemoError(Exception):
    """A store is unreachable: one line for the user, no traceback."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the simulator drives; the defaults make every kind of outcome show up."""

    devices: int = 20
    speed: str = "x10"
    duration_s: float = 60.0
    seed: int = 1
    start_interval_s: float = 15.0  # cars start 15 s apart: all 20 on the stage in ~30 s at x10
    duplicate_rate: float = 0.02
    offline_rate: float = 0.03
    nofix_rate: float = 0.01
    malformed_rate: float = 0.005


@dataclass(frozen=True, slots=True)
class Figures:
    """One reading of the run, for the live view, the progress line and the summary."""

    elapsed_s: float
    written: int
    entries_read: int
    per_second: float
    inserted: int
    duplicates: int
    rejected: dict[str, int]
    dead_letters: int
    late: int
    devices: int
    lag: int
    pending: int
    in_flight: int
    p50_s: float | None
    p99_s: float | None


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What the run left behind (the test and the summary read it)."""

    figures: Figures
    stopped_by: str
    clean: bool
    device_ids: list[str]
    stored_rows: int
    dead_letters_by_reason: dict[str, int]


def demo_settings(base: Settings, stream: str = DEMO_STREAM) -> Settings:
    """The environment's settings on the demo's own stream (and its own DLQ and notices).

    The dead-letter and notice keys are derived from the demo stream even when the
    environment names them, so a demo can never write into a real stream's keys.
    Rejections are not logged one by one: the live view counts them by reason.
    """
    fields = base.model_dump()
    fields.update(
        stream=stream,
        dlq_stream=f"{stream}:dlq",
        notice_stream=f"{stream}:committed",
        http_enabled=False,
        log_rejections_per_s=0.0,
    )
    return load_settings(**fields)


def build_simulation(options: DemoOptions) -> Simulation:
    """The sample event with its first stage opening now (like `simulate --start-at now`)."""
    event = load_event()
    first_open = min(stage.opens_at_ms for stage in event.stages)
    return Simulation(
        event,
        GeneratorConfig(
            devices=options.devices,
            seed=options.seed,
            start_interval_s=options.start_interval_s,
            time_shift_ms=time.time_ns() // 1_000_000 - first_open,
            faults=FaultConfig(
                duplicate_rate=options.duplicate_rate,
                offline_rate=options.offline_rate,
                offline_order="newest-first",
                nofix_rate=options.nofix_rate,
                malformed_rate=options.malformed_rate,
            ),
        ),
    )


async def run_demo(
    settings: Settings,
    options: DemoOptions,
    console: Console,
    *,
    live: bool | None = None,
    handle_signals: bool = False,
) -> DemoReport:
    """Migrate, run processor and simulator side by side, stop cleanly, summarise.

    `live` defaults to whether the console is a terminal: a Live view there, plain
    progress lines otherwise (CI, pipes). `handle_signals` turns Ctrl-C / SIGTERM into a
    graceful stop (the CLI sets it; tests do not, so pytest keeps its own handlers).
    """
    pace = Pace.parse(options.speed)
    await _prepare(settings, console)
    sim = build_simulation(options)
    device_ids = [plan.device_id for plan in sim.plans]
    _plain(
        console,
        f"demo: {len(device_ids)} devices at {options.speed} on stream "
        f"{settings.stream}, for {options.duration_s:g} s (Ctrl-C stops early)",
    )
    stop = asyncio.Event()
    view = _LiveView(console, options, settings.stream) if _is_live(console, live) else None
    with _signals(stop, enabled=handle_signals):
        figures, stopped_by, clean, by_reason = await _side_by_side(
            settings, sim, pace, options.duration_s, stop, view, console
        )
    stored, top = await _stored(settings, device_ids)
    report = DemoReport(figures, stopped_by, clean, device_ids, stored, by_reason)
    print_summary(console, settings, report, top)
    return report


async def _side_by_side(
    settings: Settings,
    sim: Simulation,
    pace: Pace,
    duration_s: float,
    stop: asyncio.Event,
    view: _LiveView | None,
    console: Console,
) -> tuple[Figures, str, bool, dict[str, int]]:
    """Processor and simulator as two tasks; whatever happens, both end before we return.

    Order of the stop: the simulator first, then (unless interrupted) a few seconds for
    the processor to store what was written, then `pipeline.stop()`, which flushes and
    acknowledges before `run()` returns.
    """
    metrics = Metrics()
    tally = Tally()
    started = time.monotonic()
    async with open_pipeline(settings, metrics) as pipeline:
        monitor = _Monitor(pipeline, metrics, tally, XaddLatency(pipeline.writer), started)
        runner = asyncio.create_task(pipeline.run(), name="demo-processor")
        feeder = asyncio.create_task(
            write_entries(
                sim.entries(),
                url=settings.redis_url.get_secret_value(),
                stream=settings.stream,
                pace=pace,
                on_entry=tally.add,
            ),
            name="demo-simulator",
        )
        try:
            stopped_by = await monitor.watch(
                feeder, runner, stop, started + duration_s, view, console
            )
            feeder_error = await _stop_feeder(feeder)
            if stopped_by != "Ctrl-C":
                await monitor.catch_up(runner)
        finally:
            await _stop_feeder(feeder)
            pipeline.stop()
            clean = await runner
        if feeder_error is not None:
            _plain(console, f"simulator failed: {feeder_error}")
        await monitor.sample()
        by_reason = await reasons(pipeline.stream.redis, settings.dlq_stream)
        return monitor.read(), stopped_by, clean, by_reason


def _is_live(console: Console, live: bool | None) -> bool:
    return console.is_terminal if live is None else live


@contextlib.contextmanager
def _signals(stop: asyncio.Event, *, enabled: bool) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop` (a graceful stop) while the demo runs."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if enabled:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _prepare(settings: Settings, console: Console) -> None:
    """Like `processor migrate --create-database`, and a Redis ping: fail early and clearly."""
    url = settings.database_url.get_secret_value()
    parts = urlsplit(url)
    database = parts.path.lstrip("/") or "postgres"
    try:
        admin = urlunsplit(parts._replace(path="/postgres"))
        if await ensure_database(admin, database, settings.database_mode):
            _plain(console, f"created database {database}")
        conn = await asyncpg.connect(url, timeout=settings.db_connect_timeout_s)
        try:
            report = await migrate(conn, settings)
        finally:
            await conn.close()
    except (
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        TimeoutError,
        MigrationError,
    ) as exc:
        raise DemoError(f"PostgreSQL at {redact_url(url)}: {exc}") from None
    _plain(
        console,
        f"database {database}: schema ready ({report.mode}; "
        f"{len(report.applied)} migrations applied now, {len(report.already)} already)",
    )
    redis = connect(settings)
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        raise DemoError(f"Redis at {_redis_url(settings)}: {exc}") from None
    finally:
        await redis.aclose()


async def _stop_feeder(feeder: asyncio.Task[object]) -> str | None:
    """Cancel the simulator if it still runs; its failure, if it had one, as text.

    Cancelled until it has ended: one cancel() can be lost on Python 3.11 when it lands
    as a pipelined XADD completes (see `cancel_and_wait`), and the simulator would then
    sleep until its next entry is due, which at a demo's pace can be minutes.
    """
    await cancel_and_wait([feeder])
    results = await asyncio.gather(feeder, return_exceptions=True)
    return str(results[0]) if isinstance(results[0], Exception) else None


# -- measuring ---------------------------------------------------------------------


class XaddLatency:
    """XADD → commit latency, from the stream entry ID's millisecond part.

    The processor's own histogram measures from received_at, which the simulator sets on
    its simulated clock: sped up (×10), that clock runs ahead of the wall clock and every
    latency reads 0. The entry ID is Redis's wall clock at XADD, so this stays true at any
    speed. Wraps the writer's `write`, like the benchmark's latency recorder.
    """

    def __init__(self, writer: PositionWriter) -> None:
        self.registry = CollectorRegistry()
        self.histogram = Histogram(
            "demo_xadd_to_commit_seconds",
            "From XADD (entry ID time) to the commit of the position.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._write = writer.write
        writer.write = self.write  # type: ignore[method-assign]

    async def write(self, positions: Sequence[Position]) -> WriteResult:
        result = await self._write(positions)
        now = time.time()
        stride = max(1, len(positions) // _LATENCY_SAMPLES_PER_BATCH)
        for p in positions[::stride]:
            added_ms = int(p.stream_id.partition("-")[0])
            self.histogram.observe(max(0.0, now - added_ms / 1000))
        return result

    def quantile(self, q: float) -> float | None:
        return histogram_quantile(self.registry, "demo_xadd_to_commit_seconds", q)


def histogram_quantile(registry: CollectorRegistry, name: str, q: float) -> float | None:
    """Prometheus's `histogram_quantile`: linear within the bucket holding the rank."""
    buckets: list[tuple[float, float]] = []
    for metric in registry.collect():
        if metric.name == name:
            buckets = sorted(
                (float(s.labels["le"]), s.value)
                for s in metric.samples
                if s.name == f"{name}_bucket"
            )
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bucket: its bound is all we know
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return lower


def _by_label(registry: CollectorRegistry, name: str, label: str) -> dict[str, int]:
    """A labelled counter's values (`name` without `_total`), zeros left out."""
    out: dict[str, int] = {}
    for metric in registry.collect():
        if metric.name == name:
            for s in metric.samples:
                if s.name == f"{name}_total" and s.value:
                    out[s.labels[label]] = int(s.value)
    return dict(sorted(out.items()))


class RollingRate:
    """Per second over the last `window_s`: current, unlike an average since start."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()

    def update(self, now: float, total: float) -> float:
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        then, before = self._samples[0]
        return (total - before) / (now - then) if now > then else 0.0


class _Monitor:
    """Reads the run's figures from the pipeline's metrics (and XINFO, for the lag)."""

    def __init__(
        self,
        pipeline: Pipeline,
        metrics: Metrics,
        tally: Tally,
        latency: XaddLatency,
        started: float,
    ) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.tally = tally
        self.latency = latency
        self.started = started
        self.rate = RollingRate()
        self._sampled_at = 0.0

    def _value(self, name: str) -> int:
        return int(self.metrics.registry.get_sample_value(name) or 0)

    def read(self) -> Figures:
        r = self.metrics.registry
        now = time.monotonic()
        inserted = self._value("processor_positions_inserted_total")
        duplicates = sum(_by_label(r, "processor_duplicates", "stage").values())
        return Figures(
            elapsed_s=now - self.started,
            written=self.tally.entries,
            entries_read=sum(_by_label(r, "processor_entries_read", "source").values()),
            per_second=self.rate.update(now, inserted + duplicates),
            inserted=inserted,
            duplicates=duplicates,
            rejected=_by_label(r, "processor_rejections", "reason"),
            dead_letters=sum(_by_label(r, "processor_dead_letters", "reason").values()),
            late=self._value("processor_late_positions_total"),
            devices=self._value("processor_state_devices"),
            lag=self._value("processor_consumer_lag"),
            pending=self._value("processor_pending_entries"),
            in_flight=self._value("processor_batches_in_flight"),
            p50_s=self.latency.quantile(0.5),
            p99_s=self.latency.quantile(0.99),
        )

    async def sample(self) -> None:
        """Lag and pending from Redis (the sampler `processor run` uses), at most 1/s."""
        self._sampled_at = time.monotonic()
        with contextlib.suppress(RedisError, OSError):
            await sample_once(self.pipeline.stream, None, self.metrics)

    async def watch(
        self,
        feeder: asyncio.Task[object],
        runner: asyncio.Task[bool],
        stop: asyncio.Event,
        deadline: float,
        view: _LiveView | None,
        console: Console,
    ) -> str:
        """Refresh until the deadline, Ctrl-C, or the whole event was sent and stored."""
        last_line = time.monotonic()
        with contextlib.ExitStack() as stack:
            if view is not None:
                stack.enter_context(view)
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), VIEW_REFRESH_S)
                now = time.monotonic()
                if now - self._sampled_at >= SAMPLE_EVERY_S:
                    await self.sample()
                figures = self.read()
                if view is not None:
                    view.update(figures)
                elif now - last_line >= PROGRESS_EVERY_S:
                    last_line = now
                    _plain(console, progress_line(figures))
                reason = self._finished(feeder, runner, stop, deadline, figures)
                if reason is not None:
                    return reason

    @staticmethod
    def _finished(
        feeder: asyncio.Task[object],
        runner: asyncio.Task[bool],
        stop: asyncio.Event,
        deadline: float,
        f: Figures,
    ) -> str | None:
        if stop.is_set():
            return "Ctrl-C"
        if runner.done():
            return "processor stopped"
        if feeder.done() and not feeder.cancelled() and feeder.exception() is not None:
            return "simulator failed"
        if time.monotonic() >= deadline:
            return "duration reached"
        if feeder.done() and f.entries_read >= f.written and not f.lag and not f.in_flight:
            return "simulation complete"
        return None

    async def catch_up(self, runner: asyncio.Task[bool]) -> None:
        """Give the processor a few seconds to store what the simulator already wrote."""
        until = time.monotonic() + CATCH_UP_S
        while time.monotonic() < until and not runner.done():
            await self.sample()
            f = self.read()
            if f.entries_read >= f.written and not f.lag and not f.pending:
                return
            await asyncio.sleep(0.2)


# -- showing -----------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:,.0f} ms"


def figure_rows(f: Figures) -> list[tuple[str, str]]:
    """The figures as (label, value) rows, shared by the live view and the summary."""
    return [
        ("entries written (simulator)", f"{f.written:,}"),
        ("entries read", f"{f.entries_read:,}"),
        ("positions/s (last 5 s)", f"{f.per_second:,.1f}"),
        ("inserted", f"{f.inserted:,}"),
        ("duplicates", f"{f.duplicates:,}"),
        ("rejected", f"{sum(f.rejected.values()):,}"),
        *((f"  {reason}", f"{count:,}") for reason, count in f.rejected.items()),
        ("dead letters", f"{f.dead_letters:,}"),
        ("late positions", f"{f.late:,}"),
        ("devices", f"{f.devices:,}"),
        ("consumer lag / pending", f"{f.lag:,} / {f.pending:,}"),
        ("batches in flight", f"{f.in_flight:,}"),
        ("XADD → commit p50 / p99", f"{_ms(f.p50_s)} / {_ms(f.p99_s)}"),
    ]


def progress_line(f: Figures) -> str:
    """One plain line for logs and CI, where a Live view would be noise."""
    rejected = sum(f.rejected.values())
    return (
        f"[{f.elapsed_s:5.1f} s] read {f.entries_read:,} · {f.per_second:,.0f} positions/s · "
        f"inserted {f.inserted:,} · duplicates {f.duplicates:,} · rejected {rejected:,} · "
        f"dead letters {f.dead_letters:,} · late {f.late:,} · devices {f.devices:,} · "
        f"lag {f.lag:,} · pending {f.pending:,} · in flight {f.in_flight} · "
        f"p50 {_ms(f.p50_s)} · p99 {_ms(f.p99_s)}"
    )


class _LiveView:
    """The terminal view, redrawn about twice a second."""

    def __init__(self, console: Console, options: DemoOptions, stream: str) -> None:
        self.options = options
        self.stream = stream
        self.live = Live(console=console, auto_refresh=False, transient=False)

    def __enter__(self) -> _LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def update(self, f: Figures) -> None:
        title = (
            f"processor demo · {self.stream} · {self.options.speed} · "
            f"{f.elapsed_s:.0f} / {self.options.duration_s:g} s"
        )
        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column("what", style="dim")
        table.add_column("value", justify="right")
        for label, value in figure_rows(f):
            table.add_row(label, value)
        self.live.update(table, refresh=True)


# -- after the run -----------------------------------------------------------------


def device_filter(device_ids: Sequence[str]) -> str:
    """`device_id IN (…)` with literal ids, so the printed psql commands run as shown."""
    ids = ", ".join("'" + d.replace("'", "''") + "'" for d in device_ids)
    return f"device_id IN ({ids})"


def sample_query(device_ids: Sequence[str]) -> str:
    """Top devices of the demo by stored positions, with their time span and mean speed."""
    return (
        "SELECT device_id, count(*) AS positions, min(ts) AS first_ts, max(ts) AS last_ts, "
        "round(avg(speed)::numeric, 1) AS avg_kmh FROM telemetry.positions "
        f"WHERE {device_filter(device_ids)} "
        "GROUP BY device_id ORDER BY positions DESC, device_id LIMIT 5"
    )


async def _stored(
    settings: Settings, device_ids: Sequence[str]
) -> tuple[int, list[asyncpg.Record]]:
    """Rows stored for the demo's devices, and the sample query's result."""
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        total = await conn.fetchval(
            "SELECT count(*) FROM telemetry.positions WHERE device_id = ANY($1::text[])",
            list(device_ids),
        )
        top = await conn.fetch(sample_query(device_ids))
    finally:
        await conn.close()
    return int(total), list(top)


def psql_command(settings: Settings, sql: str) -> str:
    """A psql invocation for the configured database (never with its password)."""
    parts = urlsplit(settings.database_url.get_secret_value())
    args = ["psql", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432)]
    if parts.username:
        args += ["-U", parts.username]
    args += [parts.path.lstrip("/") or "postgres", "-c"]
    return f"{shlex.join(args)} {_double_quoted(sql)}"


def _double_quoted(text: str) -> str:
    """Shell double quotes: SQL's single quotes stay readable (shlex would break them up)."""
    for char in ("\\", '"', "$", "`"):
        text = text.replace(char, "\\" + char)
    return f'"{text}"'


def print_summary(
    console: Console, settings: Settings, report: DemoReport, top: Sequence[asyncpg.Record]
) -> None:
    """Totals, dead letters, where the rows are, how to query and how to clean up."""
    f = report.figures
    how = "cleanly" if report.clean else "with unfinished batches"
    _plain(console, f"\ndemo summary: {report.stopped_by} after {f.elapsed_s:.1f} s, stopped {how}")
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for label, value in figure_rows(f):
        table.add_row(label, value)
    table.add_row(
        f"in {settings.dlq_stream} (all runs)", f"{sum(report.dead_letters_by_reason.values()):,}"
    )
    table.add_row("rows of the demo's devices (all runs)", f"{report.stored_rows:,}")
    console.print(table)
    if f.duplicates > f.inserted:
        _plain(
            console,
            "most positions were stored already: an earlier demo run covered the same "
            "(shifted) times; they count as duplicates and are stored once.",
        )
    _plain(console, "\nquery the stored positions:")
    _plain(console, "  " + psql_command(settings, sample_query(report.device_ids)))
    result = Table(
        "device_id",
        "positions",
        "first ts (UTC)",
        "last ts (UTC)",
        "avg km/h",
        box=None,
        padding=(0, 1),
        pad_edge=False,
    )
    for row in top:
        result.add_row(
            row["device_id"],
            f"{row['positions']:,}",
            _utc(row["first_ts"]),
            _utc(row["last_ts"]),
            str(row["avg_kmh"]),
        )
    console.print(result)
    keys = " ".join(
        shlex.quote(k) for k in (settings.stream, settings.dlq_stream, settings.notice_stream)
    )
    _plain(console, "\nthe data stays in place; to remove it:")
    _plain(console, f"  redis-cli -u {shlex.quote(_redis_url(settings))} DEL {keys}")
    delete = f"DELETE FROM telemetry.positions WHERE {device_filter(report.device_ids)}"
    _plain(console, "  " + psql_command(settings, delete))


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _redis_url(settings: Settings) -> str:
    return redact_url(settings.redis_url.get_secret_value())


def _plain(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)
