"""The benchmark's short table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from processor.tools.bench.run import BenchResult


def print_report(result: BenchResult, console: Console) -> None:
    f = result.figures
    mode = result.config.get("storage_mode", "plain")
    table = Table(title=f"processor bench ({mode})", show_lines=False)
    table.add_column("measurement")
    table.add_column("positions/s", justify="right")
    table.add_column("CPU s", justify="right")
    table.add_column("peak RSS MB", justify="right")
    table.add_row(
        "raw COPY ceiling (empty table)", f"{f['raw_copy_ceiling']['rows_per_s']:,.0f}", "", ""
    )
    if "raw_copy_ceiling_hypertable" in f:
        table.add_row(
            "raw COPY ceiling (empty hypertable)",
            f"{f['raw_copy_ceiling_hypertable']['rows_per_s']:,.0f}",
            "",
            "",
        )
    table.add_row("writer: COPY staging + INSERT", f"{f['writer_copy']['rows_per_s']:,.0f}", "", "")
    table.add_row("writer: INSERT … unnest", f"{f['writer_unnest']['rows_per_s']:,.0f}", "", "")
    for key, label in (
        ("naive_peer", "naive peer, end to end"),
        ("processor", "processor, end to end"),
    ):
        row = f[key]
        table.add_row(
            label,
            f"{row['positions_per_s']:,.0f}",
            f"{row['cpu_s']:.2f}",
            f"{row['max_rss_mb']:.0f}",
        )
    console.print(table)
    if "latency" in f:
        lat = f["latency"]
        console.print(
            f"latency at {result.config['latency_rate']} positions/s "
            f"({lat['samples']:.0f} positions): p50 {lat['p50_ms']:.0f} ms, "
            f"p95 {lat['p95_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms"
        )
    if "citus" in f:
        print_citus(result, console)
    if "domain" in f:
        print_domain(result, console)
    for name, value in result.ratios.items():
        console.print(f"{name}: {value:.2f}")


def print_citus(result: BenchResult, console: Console) -> None:
    """The Citus section beside this run's plain figures."""
    f = result.figures
    c = f["citus"]
    table = Table(
        title=(
            f"Citus: {c['workers']:.0f} workers, {c['shards']:.0f} shards,"
            f" {c['cached_connections']:.0f} cached connections per worker"
        )
    )
    table.add_column("measurement")
    table.add_column("plain", justify="right")
    table.add_column("Citus", justify="right")
    table.add_column("Citus ÷ plain", justify="right")
    for label, plain, citus in (
        (
            "writer: COPY staging + INSERT",
            f["writer_copy"]["rows_per_s"],
            c["writer_copy_rows_per_s"],
        ),
        (
            "writer: INSERT … unnest",
            f["writer_unnest"]["rows_per_s"],
            c["writer_unnest_rows_per_s"],
        ),
        (
            "processor, end to end",
            f["processor"]["positions_per_s"],
            c["processor_positions_per_s"],
        ),
    ):
        table.add_row(label, f"{plain:,.0f}", f"{citus:,.0f}", f"{citus / plain:.2f}")
    console.print(table)
    exact = (
        "exact"
        if c["stored_rows"] == c["unique_positions"] == c["processor_inserted"]
        else "MISMATCH"
    )
    console.print(
        f"Citus rows stored {c['stored_rows']:,.0f},"
        f" counted inserted {c['processor_inserted']:,.0f},"
        f" unique positions sent {c['unique_positions']:,.0f}: {exact}"
    )


def print_domain(result: BenchResult, console: Console) -> None:
    """The domain section: the core beside the stage, and the stage keeping up."""
    f = result.figures
    d = f["domain"]
    table = Table(title="domain stage", show_header=False)
    table.add_column("measurement")
    table.add_column("value", justify="right")
    for key, label in (
        ("core_without_domain", "core end to end, no domain stage (positions/s)"),
        ("core_with_failing_domain", "core end to end, domain stage failing (positions/s)"),
        ("core_with_working_domain", "core end to end, domain stage working (positions/s)"),
    ):
        if key in f:
            table.add_row(label, f"{f[key]['positions_per_s']:,.0f}")
    stages = ", ".join(f"{d[k]:.0f}" for k in sorted(d) if k.startswith("stage_"))
    rows = (
        (
            "layout",
            f"{d['geofences']:.0f} geofences ({stages} per stage)",
        ),
        (
            "feed",
            f"{result.config.get('domain_rate', '')} positions/s for {d['seconds']:.0f} s into "
            + (
                "processor run + processor domain"
                if d.get("separate_processes")
                else "processor run --with-domain"
            )
            + (", mass start after 60 s" if d.get("mass_start") else ""),
        ),
        (
            "positions stored /s (2nd half, the one judged)",
            f"{d['positions_per_s']:,.0f} ({d.get('positions_per_s_judged', float('nan')):,.0f})",
        ),
        (
            "notices handled /s (published /s)",
            f"{d['notices_per_s']:.1f} ({d['notices_produced_per_s']:.1f})",
        ),
        (
            "device windows /s (settled by the fast path)",
            f"{d['windows_per_s']:,.0f} ({d.get('fast_windows_per_s', float('nan')):,.0f})",
        ),
        ("domain lag max / p95 / mean (notices)", _lag(d)),
        ("lag max, in seconds of notices", f"{d['lag_max_s']:.1f} s"),
        (
            "trend of the lag's troughs, 2nd half of the feed",
            f"{d['lag_slope_per_s']:+.2f} notices/s",
        ),
        ("all handled after the feed stopped in", f"{d['drained_s']:.1f} s"),
        ("feed started late by", f"{d.get('feed_late_s', 0.0):.1f} s"),
        ("lag bounded", _bounded(d, float(result.config.get("domain_rate", "nan")))),
        (
            "window recompute p50 / p99 / mean",
            f"{d['window_p50_ms']:.1f} / {d['window_p99_ms']:.1f} / {d['window_mean_ms']:.1f} ms",
        ),
        (
            "core commit latency p50 / p99 meanwhile",
            f"{d['commit_latency_p50_ms']:.0f} / {d['commit_latency_p99_ms']:.0f} ms",
        ),
        ("timing records written", f"{d['timing_records']:,.0f}"),
        (
            "stage results running / finished / other; penalties; alerts",
            f"{d.get('results_running', 0):,.0f} / {d.get('results_finished', 0):,.0f} / "
            f"{d.get('results_other', 0):,.0f}; {d.get('penalties', 0):,.0f}; "
            f"{d.get('alerts', 0):,.0f}",
        ),
        ("domain failures / restarts", f"{d['domain_failures']:.0f} / {d['domain_restarts']:.0f}"),
        ("process CPU (cores)", f"{d['cpu_share']:.2f}"),
    )
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)


def _lag(d: dict[str, float]) -> str:
    return f"{d['lag_max']:.0f} / {d['lag_p95']:.0f} / {d['lag_mean']:.1f}"


def _bounded(d: dict[str, float], rate: float) -> str:
    verdict = "yes" if d["bounded"] else "NO"
    judged = d.get("positions_per_s_judged", float("nan"))
    if not judged >= 0.95 * rate:  # also NaN: not known to be at the target
        verdict += f" (but fed {judged:,.0f}/s, under the {rate:,.0f}/s target)"
    return verdict
