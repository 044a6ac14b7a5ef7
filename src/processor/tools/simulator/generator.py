"""Stream entries for N devices driving the event's stages, in arrival order.

Each device is a lazy generator of (received_at, …, entry) in non-decreasing arrival
order; a heap merges them, so memory stays proportional to the number of devices,
not entries. Every random choice comes from per-device generators seeded from the
run seed: the same seed gives byte-identical entries.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

from processor.tools.simulator.course import Course
from processor.tools.simulator.event import SampleEvent
from processor.tools.simulator.faults import Bursts, FaultConfig, OfflineOrder, corrupt
from processor.tools.simulator.records import (
    IO_MOVEMENT,
    IsoFormatter,
    Payload,
    RecordBuilder,
    TimeFormat,
)
from processor.tools.simulator.scenarios import Scenario, Scripts
from processor.tools.simulator.schedule import (
    DevicePlan,
    ExtrasStart,
    ScheduleConfig,
    plan_devices,
)

OFFLINE_PACKET_RECORDS = 25
OFFLINE_PACKET_GAP_MS = 40
DUPLICATE_DELAY_MS = (2_000, 20_000)
MERGE_WINDOW_MS = 5_000
_encode = msgspec.json.encode
_MOVEMENT_EVENT = int(IO_MOVEMENT)


class Entry(msgspec.Struct, frozen=True, gc=False):
    """One stream entry, with what the simulator did to it (for tests and summaries)."""

    device_id: str
    ts_ms: int
    received_ms: int
    payload: bytes
    version: bytes | None = b"1"
    duplicate: bool = False
    offline: bool = False
    nofix: bool = False
    rejection: str | None = None  # the reason the decoder must give, for malformed entries

    def fields(self) -> dict[bytes, bytes]:
        """The Redis stream fields, exactly as XADD writes them."""
        if self.version is None:
            return {b"payload": self.payload}
        return {b"v": self.version, b"payload": self.payload}


_Item = tuple[int, int, int, Entry]  # (received_ms, device index, emission seq, entry)


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    devices: int | None = None  # default: one per event entry
    seed: int = 1
    rate_hz: float = 1.0
    noise_m: float = 0.0
    start_interval_s: float = 60.0
    time_format: TimeFormat = "iso"
    time_shift_ms: int = 0
    latency_ms: tuple[int, int] = (150, 900)
    faults: FaultConfig = field(default_factory=FaultConfig)
    scenarios: tuple[Scenario, ...] = ()  # scripted moments with exact expected facts
    extras_start: ExtrasStart = "part_way"  # where load devices join a stage (schedule.py)

    @property
    def period_ms(self) -> int:
        if not 0.001 <= self.rate_hz <= 100.0:
            raise ValueError("rate_hz must be within 0.001..100")
        return max(1, round(1000.0 / self.rate_hz))


@dataclass(slots=True)
class Counters:
    """What generation did, counted as the stream is consumed."""

    records: int = 0  # fixes sampled from trajectories
    dropouts: int = 0  # of which never sent


class Simulation:
    """An event, a configuration, and the device plans derived from them."""

    def __init__(self, event: SampleEvent, config: GeneratorConfig) -> None:
        self.event = event
        self.config = config
        self.course = Course(event)
        devices = config.devices if config.devices is not None else len(event.entries)
        self.scripts = Scripts(self.course, config.scenarios, devices)
        self.plans = plan_devices(
            self.course,
            ScheduleConfig(
                devices=devices,
                seed=config.seed,
                period_ms=config.period_ms,
                start_interval_s=config.start_interval_s,
                time_shift_ms=config.time_shift_ms,
                extras_start=config.extras_start,
            ),
            self.scripts.shape if config.scenarios else None,
        )
        self.holds = self.scripts.holds(self.plans)
        self.counters = Counters()
        self.iso = IsoFormatter()

    def entries(self) -> Iterator[Entry]:
        """All entries of the run in arrival (received_at) order, lazily.

        A k-way merge by windows: devices due within the next MERGE_WINDOW_MS are drained
        into one list, sorted in C. The order is exactly a full merge's (ties broken by
        device, then emission order) at a fraction of a per-entry heap's cost.
        """
        streams = [self._device(plan) for plan in self.plans]
        pending: list[_Item | None] = [next(stream, None) for stream in streams]
        due = [(item[0], i) for i, item in enumerate(pending) if item is not None]
        heapq.heapify(due)
        while due:
            end = due[0][0] + MERGE_WINDOW_MS
            batch: list[_Item] = []
            while due and due[0][0] < end:
                i = heapq.heappop(due)[1]
                stream = streams[i]
                item = pending[i]
                while item is not None and item[0] < end:
                    batch.append(item)
                    item = next(stream, None)
                pending[i] = item
                if item is not None:
                    heapq.heappush(due, (item[0], i))
            batch.sort()
            for item in batch:
                yield item[3]

    def _device(self, plan: DevicePlan) -> Iterator[_Item]:
        cfg = self.config
        faults = cfg.faults
        seed, idx, period = cfg.seed, plan.index, cfg.period_ms
        rng_noise = random.Random(f"noise:{seed}:{idx}")
        rng_fault = random.Random(f"fault:{seed}:{idx}")
        builder = RecordBuilder(
            plan.device_id,
            self.course.projection,
            random.Random(f"io:{seed}:{idx}"),
            cfg.time_format,
            self.iso,
        )
        lo, hi = faults.offline_burst_s
        offline = Bursts(
            faults.offline_rate,
            (max(1, round(lo * 1000 / period)), max(1, round(hi * 1000 / period))),
            rng_fault,
        )
        nofix = Bursts(faults.nofix_rate, faults.nofix_burst, rng_fault)
        out = _DeviceOut(plan.device_id, builder, rng_fault, faults)
        lat_lo, lat_span = cfg.latency_ms[0], cfg.latency_ms[1] - cfg.latency_ms[0] + 1
        uniform = rng_fault.random
        noise = cfg.noise_m
        gauss = rng_noise.gauss
        dropout = faults.dropout_rate
        counters = self.counters
        heap = out.heap
        last_live = 0
        trip_base = 0.0
        for leg in plan.legs:
            sampler = leg.trajectory.sampler()
            moving = False
            s = leg.s_start
            hold = self.holds.get((idx, leg.leg))
            for ts in range(leg.first_ms, leg.last_ms + 1, period):
                if hold is not None and ts >= hold.upload_ms:  # first: keeps arrival order
                    out.upload(hold.upload_ms, hold.order)
                    hold = None
                while heap and heap[0][0] <= ts:
                    received, seq, entry = heapq.heappop(heap)
                    yield received, idx, seq, entry
                x, y, heading, v, s = sampler.at(ts)
                counters.records += 1
                trip = trip_base + s - leg.s_start
                buffering = offline.step() or (hold is not None and hold.from_ms <= ts)
                if dropout and uniform() < dropout:
                    counters.dropouts += 1
                    continue
                event_io = 0
                if (v > 0.0) != moving:
                    moving = v > 0.0
                    event_io = _MOVEMENT_EVENT
                if nofix.step():
                    doc = builder.no_fix(ts, trip, zeroed=uniform() < 0.3)
                    flag_nofix = True
                else:
                    if noise:
                        x += gauss(0.0, noise)
                        y += gauss(0.0, noise)
                    doc = builder.fix(ts, x, y, heading, v, trip, event_io)
                    flag_nofix = False
                if buffering:
                    out.buffer.append((ts, doc, flag_nofix))
                    continue
                latency = lat_lo + int(uniform() * lat_span)
                if out.buffer:
                    out.upload(ts + latency)
                last_live = max(last_live, ts + latency)
                out.push(ts, doc, last_live, offline=False, nofix=flag_nofix)
            offline.cut()
            if hold is not None:
                out.upload(hold.upload_ms, hold.order)
            elif out.buffer:
                out.upload(leg.last_ms + lat_lo + int(uniform() * lat_span))
            trip_base += s - leg.s_start
        while heap:
            received, seq, entry = heapq.heappop(heap)
            yield received, idx, seq, entry


class _DeviceOut:
    """A device's outgoing side: the offline buffer and the not-yet-due entries."""

    __slots__ = ("buffer", "builder", "device_id", "faults", "heap", "rng", "seq")

    def __init__(
        self,
        device_id: str,
        builder: RecordBuilder,
        rng: random.Random,
        faults: FaultConfig,
    ) -> None:
        self.device_id = device_id
        self.builder = builder
        self.rng = rng
        self.faults = faults
        self.heap: list[tuple[int, int, Entry]] = []
        self.buffer: list[tuple[int, Payload, bool]] = []
        self.seq = 0

    def push(self, ts: int, doc: Payload, received: int, *, offline: bool, nofix: bool) -> None:
        faults, rng = self.faults, self.rng
        doc["received_at"] = self.builder.time(received)
        if faults.malformed_rate and rng.random() < faults.malformed_rate:
            version, payload, reason = corrupt(doc, rng)
            entry = Entry(
                self.device_id, ts, received, payload, version, False, offline, nofix, reason
            )
            self._add(received, entry)
            return
        self._add(
            received, Entry(self.device_id, ts, received, _encode(doc), b"1", False, offline, nofix)
        )
        if faults.duplicate_rate and rng.random() < faults.duplicate_rate:
            again = received + rng.randint(*DUPLICATE_DELAY_MS)
            copy = dict(doc)
            copy["received_at"] = self.builder.time(again)
            self._add(
                again, Entry(self.device_id, ts, again, _encode(copy), b"1", True, offline, nofix)
            )

    def upload(self, at_ms: int, order: OfflineOrder | None = None) -> None:
        """Send the offline buffer in packets, in `order` (default: the configured one)."""
        records = self.buffer
        if (order or self.faults.offline_order) == "newest-first":
            records.reverse()
        for j, (ts, doc, nofix) in enumerate(records):
            received = at_ms + (j // OFFLINE_PACKET_RECORDS) * OFFLINE_PACKET_GAP_MS
            self.push(ts, doc, received, offline=True, nofix=nofix)
        self.buffer = []

    def _add(self, received: int, entry: Entry) -> None:
        heapq.heappush(self.heap, (received, self.seq, entry))
        self.seq += 1


@dataclass(slots=True)
class Tally:
    """Entries seen by a consumer, by fault; and each device's last fix time (ground
    truth of a truncated run stops there)."""

    entries: int = 0
    duplicate: int = 0
    offline: int = 0
    nofix: int = 0
    malformed: int = 0
    last_ts: dict[str, int] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        self.entries += 1
        if entry.rejection is not None:
            self.malformed += 1
            return
        if entry.duplicate:
            self.duplicate += 1
        else:
            self.offline += entry.offline
            self.nofix += entry.nofix
        if entry.ts_ms > self.last_ts.get(entry.device_id, -1):
            self.last_ts[entry.device_id] = entry.ts_ms
