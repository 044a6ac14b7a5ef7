"""The benchmark's domain section: does the domain stage keep up, and does it leave the core alone?

The issue's target: "the domain stage keeps up with 2 000 positions/s on a stage with
50 geofences (measured in the benchmark, lag bounded)", and "the core keeps storing at
full speed while the domain stage is failing". Measured here, in the benchmark's own
database and stream keys:

1. Isolation: the pre-filled stream drained by the pipeline with a domain stage in the
   same process that fails on every batch (the realistic outage: Directus's tables are
   not there yet), then with one that works, against the plain pipeline's figure.
2. Keeping up: a layout of ≥ 50 geofences on every stage (`bench_layout`: the sample's
   gates and zones plus split lines and waypoints generated along the routes) loaded
   into the Directus tables, the simulator feeding 2 000 positions/s in real time
   through `processor run --with-domain`, and every second the domain group's lag on the
   notice stream (XINFO GROUPS lag + pending) and the process's metrics. Reported:
   positions/s stored, notices/s handled, lag max/p95, its trend, the time to drain
   after the feed stops, and window recompute time (from the stage's histogram).

`python -m processor.tools.bench.domain off|failing|working` is the isolation worker:
like `bench.worker`, settings from the environment, one JSON line out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from processor.core.settings import Settings, load_settings
from processor.domain.config import config_from_event_file
from processor.observability.metrics import Metrics
from processor.tools.bench.rss import peak_rss_mb
from processor.tools.bench.workload import produce_realtime
from processor.tools.event_loader import load_event_rows, read_event_file
from processor.tools.simulator.course import Course, crossings
from processor.tools.simulator.event import load_event
from processor.tools.simulator.geo import XY
from processor.tools.simulator.schedule import EXTRA_SERIAL_BASE, ExtrasStart, imei

Say = Callable[[str], None]
DIRECTUS_FIXTURE = Path(__file__).resolve().parents[2] / "storage" / "directus_fixture.sql"
GEOFENCES_PER_STAGE = 52
GATE_HALF_WIDTH_M = 15.0
WAYPOINT_RADIUS_M = 25.0
EDGE_M = 300.0  # no generated geofence this close to a route's start or end
DRAIN_LIMIT_S = 30.0
START_TIMEOUT_S = 120.0  # for the stage's processes to answer over HTTP (a loaded machine is slow)
# Time for the processes to start before the feed (and the stages) begin.
FEED_LEAD_S = 8.0
# The lag is a sawtooth: a read takes what accumulated while the previous batch ran, so it
# climbs during a batch and drops at the next read; its peaks say how big batches got,
# its troughs what was left over. A stage that keeps up leaves nothing over: the troughs
# stay flat. Bounded: over the second half of the feed (the first is warm-up, the batch
# size adapting to the load) the least-squares trend of the 5-second minima of the lag
# rises by at most this share of the notices produced per second (or 0.5 notice/s), and
# everything is handled within DRAINED_WITHIN_S of the feed stopping.
GROWTH_TOLERANCE = 0.05
TROUGH_WINDOW_S = 5.0
DRAINED_WITHIN_S = 15.0
# Fewer troughs than this (a feed under ~30 s) say nothing about a trend: not bounded.
MIN_TROUGHS = 3
# The mappings of the IO elements the simulator sends: the stage decodes them for every
# position (telemetry.position_attributes), as it would in production.
IO_MAPPINGS = (
    ("FMB920", 239, "ignition", "boolean", None, None),
    ("FMB920", 240, "movement", "boolean", None, None),
    ("FMB920", 69, "gnss_status", "unsigned", None, None),
    ("*", 16, "total_odometer_km", "unsigned", "0.001", "km"),
    ("*", 199, "trip_odometer_km", "unsigned", "0.001", "km"),
)


# --- the layout -------------------------------------------------------------------------


def bench_layout(devices: int, per_stage: int = GEOFENCES_PER_STAGE) -> dict[str, Any]:
    """The sample event with `per_stage` geofences on every stage, and an entry for each
    of the simulator's first `devices` devices; an event file (`event load`'s shape).

    Added along each route, evenly spaced between the sample's own: split lines (two in
    three) drawn across the road from its left edge to its right (direction forward),
    and waypoints on the road. A gate the road meets more than once (a hairpin) is slid
    along until it crosses exactly once, as a timing official would place it.
    """
    doc = read_event_file()
    course = Course(load_event())
    to_lonlat = course.projection.to_lonlat
    next_id = max(g["id"] for g in doc["geofences"]) + 1
    for stage_course in course.stages:
        stage = stage_course.stage
        route = stage_course.route
        have = sum(1 for g in doc["geofences"] if g["stage"] == stage.id)
        extra = per_stage - have
        if extra <= 0:
            continue
        step = (route.length - 2 * EDGE_M) / extra
        for k in range(extra):
            s = EDGE_M + (k + 0.5) * step
            base = {"event": stage.event, "stage": stage.id, "sequence": 100 + k}
            if k % 3 == 2:
                x, y, _ = route.at(s)
                lon, lat = to_lonlat(x, y)
                doc["geofences"].append(
                    base
                    | {
                        "id": next_id,
                        "kind": "waypoint",
                        "name": f"SS{stage.id} bench WP{k}",
                        "geometry": {"type": "Point", "coordinates": [lon, lat]},
                        "direction": None,
                        "radius_m": WAYPOINT_RADIUS_M,
                        "speed_limit_kmh": None,
                    }
                )
            else:
                line = _single_crossing_gate(route, s, step / 2)
                if line is None:
                    continue
                doc["geofences"].append(
                    base
                    | {
                        "id": next_id,
                        "kind": "split_line",
                        "name": f"SS{stage.id} bench split {k}",
                        "geometry": {
                            "type": "LineString",
                            "coordinates": [list(to_lonlat(x, y)) for x, y in line],
                        },
                        "direction": "forward",
                        "radius_m": None,
                        "speed_limit_kmh": None,
                    }
                )
            next_id += 1
    _add_devices(doc, devices)
    return doc


def _single_crossing_gate(route: Any, s: float, room: float) -> list[XY] | None:
    """A gate across the road near arc length s that the road crosses exactly once."""
    for nudge in range(0, int(room), 10):
        x, y, heading = route.at(s + nudge)
        h = math.radians(heading)  # clockwise from north
        lx, ly = -math.cos(h), math.sin(h)  # the driver's left
        w = GATE_HALF_WIDTH_M
        line = [(x + w * lx, y + w * ly), (x - w * lx, y - w * ly)]
        if len(crossings(route, line)) == 1:
            return line
    return None


def _add_devices(doc: dict[str, Any], devices: int) -> None:
    """Devices and entries for the simulator's extra cars (index ≥ the sample's entries)."""
    sample = len(doc["entries"])
    next_device = max(d["id"] for d in doc["devices"]) + 1
    next_entry = max(e["id"] for e in doc["entries"]) + 1
    event = doc["events"][0]["id"]
    for index in range(sample, devices):
        doc["devices"].append(
            {
                "id": next_device,
                "imei": imei(EXTRA_SERIAL_BASE + index),
                "model": "FMB920",
                "label": f"bench #{index}",
            }
        )
        doc["entries"].append(
            {
                "id": next_entry,
                "event": event,
                "device": next_device,
                "number": 1000 + index,
                "crew_name": f"Bench crew {index}",
                "class": "T1",
                "status": "confirmed",
            }
        )
        next_device += 1
        next_entry += 1


def layout_counts(doc: dict[str, Any]) -> dict[str, int]:
    """Geofences per stage of a layout, checked the way the domain reads it."""
    config, errors = config_from_event_file(doc)
    if errors:
        raise ValueError(f"bench layout has invalid rows: {[str(e) for e in errors[:3]]}")
    counts: dict[str, int] = {"geofences": len(config.geofences)}
    for stage in config.stages:
        counts[f"stage_{stage.id}"] = len(config.geofences_of(stage.id))
    return counts


async def load_layout(conn: asyncpg.Connection, doc: dict[str, Any]) -> None:
    """Directus's tables (the SQL fixture: this is the benchmark's own throwaway database),
    the layout's rows and the IO mappings."""
    await conn.execute(await asyncio.to_thread(DIRECTUS_FIXTURE.read_text))
    await load_event_rows(conn, doc)
    await conn.executemany(
        "INSERT INTO public.io_mappings (model, io_id, name, type, multiplier, unit)"
        " VALUES ($1, $2, $3, $4, $5::numeric, $6)",
        IO_MAPPINGS,
    )


# --- isolation: the core beside a failing (or working) domain stage ---------------------


async def _worker(mode: str) -> dict[str, float]:
    """The pipeline draining the stream, with the domain stage in the same process
    (`run --with-domain`'s `DomainStage`) unless `mode` is `off`."""
    from processor.app import DomainStage, open_pipeline

    settings = load_settings()
    metrics = Metrics()
    domain_metrics = Metrics()
    async with open_pipeline(settings, metrics) as pipeline:
        stage = DomainStage(settings, domain_metrics) if mode != "off" else None
        task = asyncio.create_task(stage.run()) if stage is not None else None
        cpu0 = time.process_time()
        started = time.time()
        clean = await pipeline.run(until_idle=True)
        cpu = time.process_time() - cpu0
        if stage is not None and task is not None:
            stage.stop()
            await asyncio.wait_for(task, 60)
    last_commit = metrics.registry.get_sample_value("processor_last_commit_timestamp_seconds")
    sample = domain_metrics.registry.get_sample_value
    return {
        "clean": float(clean),
        "wall_s": (last_commit - started) if last_commit else float("nan"),
        "cpu_s": cpu,
        "max_rss_mb": peak_rss_mb(),
        "inserted": metrics.registry.get_sample_value("processor_positions_inserted_total") or 0.0,
        "domain_failures": sample("processor_domain_failures_total") or 0.0,
        "domain_notices": sample("processor_domain_notices_total") or 0.0,
        "notices_published": metrics.registry.get_sample_value("processor_notices_published_total")
        or 0.0,
    }


async def _isolation(
    mode: str,
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    settings: Settings,
    env: dict[str, str],
    entries: list[dict[bytes, bytes]],
) -> dict[str, float]:
    from processor.tools.bench.run import _fill, _subprocess_json, _truncate

    await _truncate(conn)
    await redis.delete(settings.stream, settings.notice_stream)
    await _fill(redis, settings.stream, entries)
    figures = await asyncio.to_thread(
        _subprocess_json, [sys.executable, "-m", "processor.tools.bench.domain", mode], env, 900
    )
    figures["positions_per_s"] = figures["inserted"] / figures["wall_s"]
    return figures


# --- keeping up: 2 000 positions/s through `processor run --with-domain` ----------------


@dataclass
class _Samples:
    t: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)
    scrapes: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


async def _group_lag(redis: aioredis.Redis, stream: str, group: str) -> float | None:
    """Notices the group has not finished: not yet delivered (lag) + delivered, unacked."""
    try:
        groups = await redis.xinfo_groups(stream)
    except aioredis.ResponseError:
        return None
    for info in groups:
        name = info["name"]
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return float((info.get("lag") or 0) + (info.get("pending") or 0))
    return None


async def _scrape(session: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    """Samples by name: a float for an unlabelled one, a list of (labels, value) else."""
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels:
                out.setdefault(sample.name, []).append((sample.labels, sample.value))
            else:
                out[sample.name] = sample.value
    return out


def histogram_quantile(q: float, buckets: list[tuple[dict[str, str], float]]) -> float:
    """Prometheus's `histogram_quantile`: linear within the bucket holding rank q."""
    bounds = sorted((float(labels["le"]), value) for labels, value in buckets)
    total = bounds[-1][1] if bounds else 0.0
    if total <= 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in bounds:
        if count >= rank:
            if math.isinf(upper):
                return lower
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, count
    return lower


def _delta_buckets(
    end: list[tuple[dict[str, str], float]], start: list[tuple[dict[str, str], float]]
) -> list[tuple[dict[str, str], float]]:
    before = {labels["le"]: value for labels, value in start}
    return [(labels, value - before.get(labels["le"], 0.0)) for labels, value in end]


def _slope(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over ts (NaN: too few points to say)."""
    n = len(ts)
    if n < 2:
        return float("nan")
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var if var else 0.0


def _troughs(
    ts: list[float], ys: list[float], *, since: float, every: float
) -> list[tuple[float, float]]:
    """(window middle, minimum) of the samples after `since`, per `every` seconds."""
    windows: dict[int, list[float]] = {}
    for t, y in zip(ts, ys, strict=True):
        if t >= since:
            windows.setdefault(int((t - since) // every), []).append(y)
    return [(since + (k + 0.5) * every, min(v)) for k, v in sorted(windows.items())]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _spawn(args: list[str], env: dict[str, str]) -> tuple[asyncio.subprocess.Process, Path]:
    """`processor <args>` with its output in a temporary log file."""
    fd, name = tempfile.mkstemp(prefix="bench-domain-", suffix=".log")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *_profiled(args[0]),
            "-m",
            "processor",
            *args,
            env=env,
            stdout=fd,
            stderr=asyncio.subprocess.STDOUT,
        )
    finally:
        os.close(fd)
    return proc, Path(name)


def _profiled(name: str) -> list[str]:
    """With BENCH_PROFILE_DIR set, each spawned process runs under cProfile and leaves
    `<dir>/<command>.prof` when it stops (for `python -m pstats`)."""
    folder = os.environ.get("BENCH_PROFILE_DIR")
    if not folder:
        return []
    return ["-m", "cProfile", "-o", str(Path(folder) / f"{name}.prof")]


async def _stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0


def _merge(scrapes: list[dict[str, Any]]) -> dict[str, Any]:
    """Several processes' samples as one: values summed, labelled samples pooled (a
    histogram exported by one process only keeps its buckets)."""
    out: dict[str, Any] = {}
    for scrape in scrapes:
        for name, value in scrape.items():
            if isinstance(value, list):
                out.setdefault(name, []).extend(value)
            else:
                out[name] = out.get(name, 0.0) + value
    return out


async def _realtime(
    settings: Settings,
    env: dict[str, str],
    redis: aioredis.Redis,
    conn: asyncpg.Connection,
    *,
    rate: int,
    seconds: float,
    seed: int,
    separate: bool = False,
    extras_start: ExtrasStart = "part_way",
) -> dict[str, float]:
    """The simulator at `rate` in real time into `processor run --with-domain` (or, with
    `separate`, a `processor run` and a `processor domain`), sampled every second."""
    stream = f"{settings.stream}:domain"
    notices = f"{stream}:committed"
    # The event's stages open when the feed starts (the simulator drives them from their
    # opening on): results are `running` with their splits, as in a live event, not `dns`
    # of stages closed months ago.
    feed_start_ms = time.time_ns() // 1_000_000 + int(FEED_LEAD_S * 1000)
    shift_ms = feed_start_ms - min(s.opens_at_ms for s in load_event().stages)
    await conn.execute(
        "UPDATE public.stages SET opens_at = opens_at + make_interval(secs => $1 / 1000.0),"
        " closes_at = closes_at + make_interval(secs => $1 / 1000.0)",
        shift_ms,
    )
    commands = [["run"], ["domain"]] if separate else [["run", "--with-domain"]]
    ports = [_free_port() for _ in commands]
    procs = []
    for args, port in zip(commands, ports, strict=True):
        procs.append(
            await _spawn(
                args,
                dict(
                    env,
                    PROCESSOR_STREAM=stream,
                    PROCESSOR_HTTP_ENABLED="true",
                    PROCESSOR_HTTP_PORT=str(port),
                ),
            )
        )
    samples = _Samples()
    feeding = True
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

            async def scrape_all() -> dict[str, Any]:
                return _merge([await _scrape(session, port) for port in ports])

            # Up: HTTP answers once each has migrated and started. A loaded machine can
            # take a while to start Python processes: wait for that, not a fixed time,
            # and stop waiting at once if one of them died.
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    start = await scrape_all()
                    break
                died = [p for p, _ in procs if p.returncode is not None]
                if died or time.monotonic() > deadline:
                    logs = "\n".join(_tail(log) for _, log in procs)
                    raise RuntimeError(f"{commands} did not start:\n{logs}")
                await asyncio.sleep(0.1)
            # The clock of the samples starts with the feed (the producer generates its
            # first entries meanwhile, then sends each when due).
            late_s = time.time() - feed_start_ms / 1000
            t0 = time.monotonic() - late_s

            async def sample_every_second() -> None:
                while True:
                    lag = await _group_lag(redis, notices, settings.domain_group)
                    now = time.monotonic() - t0
                    if now < 0:
                        await asyncio.sleep(min(1.0, -now))
                        continue
                    if feeding and lag is not None:
                        samples.t.append(now)
                        samples.lag.append(lag)
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        samples.scrapes.append((now, await scrape_all()))
                    await asyncio.sleep(1.0)

            sampler = asyncio.create_task(sample_every_second())
            try:
                sent = await produce_realtime(
                    settings.redis_url.get_secret_value(),
                    stream,
                    rate=rate,
                    seconds=seconds,
                    seed=seed,
                    shift_ms=shift_ms,
                    extras_start=extras_start,
                )
                fed_s = time.monotonic() - t0
                feeding = False
                at_feed_end = samples.scrapes[-1][1] if samples.scrapes else start
                drain_start = time.monotonic()
                drained_s = float("nan")
                while time.monotonic() - drain_start < DRAIN_LIMIT_S:
                    await asyncio.sleep(0.25)
                    if await _group_lag(redis, notices, settings.domain_group) == 0:
                        drained_s = time.monotonic() - drain_start
                        break
                end = await scrape_all()
            finally:
                sampler.cancel()
                await asyncio.gather(sampler, return_exceptions=True)
    finally:
        codes = [await _stop(proc) for proc, _ in procs]
    return (
        _realtime_figures(
            start, at_feed_end, end, samples, sent=sent, fed_s=fed_s, drained_s=drained_s
        )
        | {
            "rate": float(rate),
            "mass_start": float(extras_start == "start_line"),
            "feed_late_s": max(0.0, late_s),
            "separate_processes": float(separate),
            "exit_code": float(max(codes, key=abs)),
            "timing_records": float(
                await conn.fetchval(
                    "SELECT count(*) FROM public.timing_records WHERE source = 'auto'"
                )
            ),
        }
        | await _race_outputs(conn)
    )


async def _race_outputs(conn: asyncpg.Connection) -> dict[str, float]:
    """What the run left of results (by status), penalties and alerts: the work the race
    side of the stage did, so the report shows it was exercised."""
    rows = await conn.fetch(
        "SELECT collection, coalesce(data->>'status', '') AS status, count(*) AS n"
        " FROM telemetry.domain_outputs WHERE collection <> 'timing_records' GROUP BY 1, 2"
    )
    found = {f"{r['collection']}:{r['status']}": float(r["n"]) for r in rows}
    return {
        "results_running": found.get("stage_results:running", 0.0),
        "results_finished": found.get("stage_results:finished", 0.0),
        "results_other": sum(
            v
            for k, v in found.items()
            if k.startswith("stage_results:")
            and k not in ("stage_results:running", "stage_results:finished")
        ),
        "penalties": sum(v for k, v in found.items() if k.startswith("penalties:")),
        "alerts": sum(v for k, v in found.items() if k.startswith("alerts:")),
    }


def _realtime_figures(
    start: dict[str, Any],
    fed: dict[str, Any],
    end: dict[str, Any],
    samples: _Samples,
    *,
    sent: int,
    fed_s: float,
    drained_s: float,
) -> dict[str, float]:
    def delta(name: str, a: dict[str, Any] = start, b: dict[str, Any] = fed) -> float:
        return float(b.get(name, 0.0)) - float(a.get(name, 0.0))

    troughs = _troughs(samples.t, samples.lag, since=fed_s / 2, every=TROUGH_WINDOW_S)
    judged = _stored_per_s(samples.scrapes, since=fed_s / 2, until=fed_s)
    slope = _slope([t for t, _ in troughs], [y for _, y in troughs])
    produced_per_s = delta("processor_notices_published_total") / fed_s
    windows = _delta_buckets(
        end.get("processor_domain_window_duration_seconds_bucket", []),
        start.get("processor_domain_window_duration_seconds_bucket", []),
    )
    commit = _delta_buckets(
        fed.get("processor_commit_latency_seconds_bucket", []),
        start.get("processor_commit_latency_seconds_bucket", []),
    )
    window_count = delta("processor_domain_window_duration_seconds_count", b=end)
    window_sum = delta("processor_domain_window_duration_seconds_sum", b=end)
    bounded = (
        len(troughs) >= MIN_TROUGHS
        and slope <= max(0.5, GROWTH_TOLERANCE * produced_per_s)
        and not math.isnan(drained_s)
        and drained_s <= DRAINED_WITHIN_S
    )
    return {
        "seconds": fed_s,
        "positions_sent": float(sent),
        "positions_per_s": delta("processor_positions_inserted_total") / fed_s,
        # Over the half the verdict is about: the simulator's cars finish their stages
        # after a minute or so, so a longer run feeds less than `rate` towards its end.
        "positions_per_s_judged": judged,
        "notices_produced_per_s": produced_per_s,
        "notices_per_s": delta("processor_domain_notices_total") / fed_s,
        "windows_per_s": delta("processor_domain_windows_total") / fed_s,
        "fast_windows_per_s": delta("processor_domain_fast_windows_total") / fed_s,
        "lag_max": max(samples.lag, default=float("nan")),
        "lag_p95": _percentile(samples.lag, 0.95),
        "lag_mean": sum(samples.lag) / len(samples.lag) if samples.lag else float("nan"),
        "lag_slope_per_s": slope,
        "lag_max_s": max(samples.lag, default=float("nan")) / produced_per_s
        if produced_per_s
        else float("nan"),
        "notices_handled": delta("processor_domain_notices_total", b=end),
        "drained_s": drained_s,
        "bounded": float(bounded),
        "window_p50_ms": histogram_quantile(0.50, windows) * 1000,
        "window_p99_ms": histogram_quantile(0.99, windows) * 1000,
        "window_mean_ms": window_sum / window_count * 1000 if window_count else float("nan"),
        "commit_latency_p50_ms": histogram_quantile(0.50, commit) * 1000,
        "commit_latency_p99_ms": histogram_quantile(0.99, commit) * 1000,
        "domain_failures": delta("processor_domain_failures_total", b=end),
        "domain_restarts": delta("processor_domain_restarts_total", b=end),
        "cpu_share": delta("process_cpu_seconds_total") / fed_s,
    }


def _stored_per_s(
    scrapes: list[tuple[float, dict[str, Any]]], *, since: float, until: float
) -> float:
    """Positions stored per second between the first scrape at or after `since` and the
    last one up to `until`."""
    span = [(t, float(m.get("processor_positions_inserted_total", 0.0))) for t, m in scrapes]
    span = [(t, n) for t, n in span if since <= t <= until]
    if len(span) < 2 or span[-1][0] <= span[0][0]:
        return float("nan")
    return (span[-1][1] - span[0][1]) / (span[-1][0] - span[0][0])


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- the section ------------------------------------------------------------------------


@dataclass
class DomainBench:
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)


async def run_domain_bench(
    settings: Settings,
    env: dict[str, str],
    redis: aioredis.Redis,
    conn: asyncpg.Connection,
    entries: list[dict[bytes, bytes]],
    *,
    repeats: int,
    devices: int,
    rate: int,
    seconds: float,
    seed: int,
    say: Say,
    separate: bool = True,
    extras_start: ExtrasStart = "part_way",
) -> DomainBench:
    """The domain section (the isolation pairs alternate, best of `repeats` each)."""
    result = DomainBench()
    say(
        "processor without, then beside, a failing domain stage (Directus tables missing),"
        f" same stream, best of {repeats}"
    )
    runs: dict[str, list[dict[str, float]]] = {"off": [], "failing": []}
    for _ in range(max(1, repeats)):
        for mode, found in runs.items():
            found.append(await _isolation(mode, conn, redis, settings, env, entries))
    without, failing = (max(v, key=lambda f: f["positions_per_s"]) for v in runs.values())
    if min(f["domain_failures"] for f in runs["failing"]) < 1:
        raise RuntimeError("the domain stage was meant to fail and did not")
    result.figures["core_without_domain"] = without
    result.figures["core_with_failing_domain"] = failing

    doc = bench_layout(max(devices, rate))
    counts = layout_counts(doc)
    say(
        f"layout: {counts['geofences']} geofences, "
        + ", ".join(f"{v} on stage {k[6:]}" for k, v in counts.items() if k.startswith("stage_"))
        + f"; {len(doc['entries'])} entries"
    )
    await load_layout(conn, doc)
    say("processor beside a working domain stage: same stream")
    working = await _isolation("working", conn, redis, settings, env, entries)
    result.figures["core_with_working_domain"] = working

    base = without["positions_per_s"]
    result.ratios = {
        "core_with_failing_domain_vs_without": failing["positions_per_s"] / base,
        "core_with_working_domain_vs_without": working["positions_per_s"] / base,
    }
    layout = "processor run + processor domain" if separate else "processor run --with-domain"
    say(f"domain stage: {rate} positions/s for {seconds:.0f} s via {layout}")
    await conn.execute(
        "TRUNCATE telemetry.positions, telemetry.outbox, telemetry.domain_outputs,"
        " telemetry.position_attributes, public.timing_records, public.stage_results,"
        " public.penalties, public.alerts"
    )
    realtime = await _realtime(
        settings,
        env,
        redis,
        conn,
        rate=rate,
        seconds=seconds,
        seed=seed,
        separate=separate,
        extras_start=extras_start,
    )
    realtime.update({k: float(v) for k, v in counts.items()})
    result.figures["domain"] = realtime
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_worker(sys.argv[1] if len(sys.argv) > 1 else "off"))))
