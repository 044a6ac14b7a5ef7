"""`processor simulate`: drive the sample event's stages into a Redis stream.

`simulate` is a plain function so the main CLI can mount it with
`app.command("simulate")(simulate)`; `app` here runs it standalone
(`python -m processor.tools.simulator`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from processor.core.timeparse import TimeError, format_ms, parse_time_ms
from processor.tools.simulator import ground_truth, scenarios
from processor.tools.simulator.event import EventError, SampleEvent, load_event
from processor.tools.simulator.faults import FaultConfig
from processor.tools.simulator.generator import Entry, GeneratorConfig, Simulation, Tally
from processor.tools.simulator.sink import Pace, write_entries

app = typer.Typer(help="Telemetry simulator for the processor.", add_completion=False)


class OfflineOrder(StrEnum):
    oldest_first = "oldest-first"
    newest_first = "newest-first"


class TimeFormatOption(StrEnum):
    iso = "iso"
    epoch_ms = "epoch-ms"


class EntryIdsOption(StrEnum):
    auto = "auto"
    received = "received"


def _rate(what: str) -> Any:
    return typer.Option(min=0.0, max=0.99, help=what)


def simulate(
    redis_url: Annotated[
        str, typer.Option(help="Redis URL.", envvar="PROCESSOR_REDIS_URL", show_envvar=False)
    ] = "redis://127.0.0.1:6379/0",
    stream: Annotated[
        str, typer.Option(help="Stream key.", envvar="PROCESSOR_STREAM", show_envvar=False)
    ] = "telemetry:positions",
    event: Annotated[
        Path | None, typer.Option(help="Event JSON; default: the bundled sample event.")
    ] = None,
    devices: Annotated[
        int | None, typer.Option(min=1, help="Devices; default: one per entry of the event.")
    ] = None,
    rate_hz: Annotated[float, typer.Option(min=0.001, max=100.0, help="Fixes per second.")] = 1.0,
    noise_m: Annotated[float, typer.Option(min=0.0, help="GPS noise σ, metres.")] = 0.0,
    speed: Annotated[str, typer.Option(help="realtime, max, or xN (e.g. x10).")] = "max",
    duration_s: Annotated[
        float | None, typer.Option(min=0.0, help="Stop after this much simulated time.")
    ] = None,
    max_entries: Annotated[int | None, typer.Option(min=0, help="Stop after N entries.")] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same entries (byte for byte).")] = 1,
    start_interval_s: Annotated[
        float, typer.Option(min=0.0, help="Gap between starting cars.")
    ] = 60.0,
    start_at: Annotated[
        str, typer.Option(help="'event' (the file's times), 'now', or an ISO-8601 time.")
    ] = "event",
    time_format: Annotated[
        TimeFormatOption, typer.Option(help="How payload times are written.")
    ] = TimeFormatOption.iso,
    duplicate_rate: Annotated[float, _rate("Extra re-sent copies per record.")] = 0.0,
    offline_rate: Annotated[
        float, _rate("Fraction of records held in offline bursts, uploaded late.")
    ] = 0.0,
    offline_order: Annotated[
        OfflineOrder, typer.Option(help="Upload order of buffered records.")
    ] = OfflineOrder.oldest_first,
    dropout_rate: Annotated[float, _rate("Fraction of records never sent.")] = 0.0,
    nofix_rate: Annotated[
        float, _rate("Fraction of records without a GPS fix (short bursts).")
    ] = 0.0,
    malformed_rate: Annotated[
        float, _rate("Fraction of records replaced by contract violations.")
    ] = 0.0,
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="Script one car, repeatable: KIND:key=value,… with KIND stop, speeding, "
            "miss-waypoint or offline, e.g. 'stop:entry=2,stage=1,fraction=0.5,duration=120'. "
            "Expected facts go into the --ground-truth file."
        ),
    ] = None,
    ground_truth_path: Annotated[
        Path | None,
        typer.Option("--ground-truth", help="Write exact crossing times (JSON) here."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="XADDs per pipeline.")] = 500,
    entry_ids: Annotated[
        EntryIdsOption, typer.Option(help="'auto' (*) or 'received' (<received_at ms>-*).")
    ] = EntryIdsOption.auto,
    dry_run: Annotated[bool, typer.Option(help="Generate and count only; no Redis.")] = False,
) -> None:
    """Simulate rally cars on the event's stages and XADD their telemetry."""
    console = Console()
    try:
        doc = load_event(event)
        pace = Pace.parse(speed)
        config = GeneratorConfig(
            devices=devices,
            seed=seed,
            rate_hz=rate_hz,
            noise_m=noise_m,
            start_interval_s=start_interval_s,
            time_format=time_format.value,
            time_shift_ms=_time_shift(doc, start_at),
            faults=FaultConfig(
                duplicate_rate=duplicate_rate,
                offline_rate=offline_rate,
                offline_order=offline_order.value,
                dropout_rate=dropout_rate,
                nofix_rate=nofix_rate,
                malformed_rate=malformed_rate,
            ),
            scenarios=tuple(scenarios.parse(text) for text in scenario or ()),
        )
        sim = Simulation(doc, config)
    except (EventError, ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from None

    tally = Tally()
    limit = _Limit(max_entries, None if duration_s is None else round(duration_s * 1000))
    started = time.perf_counter()
    stream_of = limit.apply(sim.entries())
    if dry_run:
        for entry in stream_of:
            tally.add(entry)
    else:
        asyncio.run(
            write_entries(
                stream_of,
                url=redis_url,
                stream=stream,
                pace=pace,
                batch_size=batch_size,
                entry_ids=entry_ids.value,
                on_entry=tally.add,
            )
        )
    wall = time.perf_counter() - started
    truth_count = None
    if ground_truth_path is not None:
        records = ground_truth.compute(sim, tally.last_ts if limit.truncated else None)
        ground_truth.write(ground_truth_path, sim, records, limit.truncated)
        truth_count = len(records)
    _summary(console, sim, tally, limit, wall, dry_run, stream, ground_truth_path, truth_count)


app.command("simulate")(simulate)


def _time_shift(doc: SampleEvent, start_at: str) -> int:
    """Milliseconds to add to every time so the first stage opens at `start_at`."""
    if start_at == "event":
        return 0
    first_open = min(stage.opens_at_ms for stage in doc.stages)
    if start_at == "now":
        return time.time_ns() // 1_000_000 - first_open
    try:
        return parse_time_ms(start_at) - first_open
    except TimeError as exc:
        raise ValueError(f"--start-at: {exc}") from None


@dataclass(slots=True)
class _Limit:
    max_entries: int | None
    duration_ms: int | None
    truncated: bool = False
    first_ms: int | None = None
    last_ms: int | None = None

    def apply(self, entries: Iterator[Entry]) -> Iterator[Entry]:
        for count, entry in enumerate(entries):
            if self.first_ms is None:
                self.first_ms = entry.received_ms
            if (self.max_entries is not None and count >= self.max_entries) or (
                self.duration_ms is not None
                and entry.received_ms >= self.first_ms + self.duration_ms
            ):
                self.truncated = True
                return
            self.last_ms = entry.received_ms
            yield entry


def _summary(
    console: Console,
    sim: Simulation,
    tally: Tally,
    limit: _Limit,
    wall: float,
    dry_run: bool,
    stream: str,
    truth_path: Path | None,
    truth_count: int | None,
) -> None:
    table = Table(title="simulate" + (" (dry run)" if dry_run else f" → {stream}"))
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("entries " + ("generated" if dry_run else "written"), f"{tally.entries:,}")
    table.add_row("devices", f"{len(sim.plans):,}")
    table.add_row("fixes sampled", f"{sim.counters.records:,}")
    for name, value in (
        ("dropouts (never sent)", sim.counters.dropouts),
        ("duplicates", tally.duplicate),
        ("offline (late upload)", tally.offline),
        ("without fix", tally.nofix),
        ("malformed", tally.malformed),
    ):
        table.add_row(name, f"{value:,}")
    if limit.first_ms is not None and limit.last_ms is not None:
        table.add_row(
            "received_at span", f"{format_ms(limit.first_ms)} → {format_ms(limit.last_ms)}"
        )
    if sim.config.scenarios:
        table.add_row("scenarios", f"{len(sim.config.scenarios)}")
    table.add_row("stopped early", "yes" if limit.truncated else "no")
    table.add_row("wall time", f"{wall:.2f} s ({tally.entries / max(wall, 1e-9):,.0f} entries/s)")
    if truth_path is not None:
        table.add_row("ground truth", f"{truth_count:,} records → {truth_path}")
    console.print(table)
