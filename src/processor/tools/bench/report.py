"""The benchmark's short table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from processor.tools.bench.run import BenchResult


def print_report(result: BenchResult, console: Console) -> None:
    f = result.figures
    table = Table(title="processor bench", show_lines=False)
    table.add_column("measurement")
    table.add_column("positions/s", justify="right")
    table.add_column("CPU s", justify="right")
    table.add_column("peak RSS MB", justify="right")
    table.add_row(
        "raw COPY ceiling (empty table)", f"{f['raw_copy_ceiling']['rows_per_s']:,.0f}", "", ""
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
    for name, value in result.ratios.items():
        console.print(f"{name}: {value:.2f}")
