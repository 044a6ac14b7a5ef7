"""Contract-v1 payloads as an FMB920 would produce them through tcp-ingestion.

Values are rounded like the device rounds them (coordinates to 1e-7°, integer
altitude, angle and km/h) and the IO set is a typical periodic record, including
64-bit values as `__bigint` and byte strings as `__buffer` sentinels.
"""

from __future__ import annotations

import base64
import math
import random
from datetime import UTC, datetime
from typing import Any, Literal

from processor.tools.simulator.geo import Projection

TimeFormat = Literal["iso", "epoch-ms"]
Payload = dict[str, Any]

IO_IGNITION = "239"
IO_MOVEMENT = "240"
IO_GNSS_STATUS = "69"
GNSS_FIX, GNSS_NO_FIX = 1, 2


class IsoFormatter:
    """`format_ms` with the date/time part cached per second: same output, ~10× faster."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def __call__(self, ms: int) -> str:
        sec, milli = divmod(ms, 1000)
        head = self._cache.get(sec)
        if head is None:
            if len(self._cache) > 8192:
                self._cache.clear()
            head = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            self._cache[sec] = head
        return f"{head}{milli:03d}Z"


class RecordBuilder:
    """Builds one device's payloads; holds its constant identity and slow-moving IO."""

    def __init__(
        self,
        device_id: str,
        projection: Projection,
        rng: random.Random,
        time_format: TimeFormat,
        iso: IsoFormatter,
    ) -> None:
        self.device_id = device_id
        self._proj = projection
        self._rng = rng
        self._iso = iso
        self._epoch = time_format == "epoch-ms"
        serial = int(device_id[-7:-1]) if device_id.isdigit() else rng.randrange(10**6)
        self.iccid1 = {"__bigint": str(8_937_002_000_000_000_000 + serial * 7_919)}
        self.iccid2 = {"__bigint": str(1_000_000_000 + serial)}
        self.odometer_m = 20_000_000 + rng.randrange(40_000_000)
        self.satellites = rng.randint(8, 13)
        self.operator = rng.choice((24601, 24602, 24603))
        self.last_lonlat = (0.0, 0.0)
        self.last_alt = 0
        self._beacon_every = rng.randint(8, 15)
        self._count = 0
        self._io_base: dict[str, Any] = {}

    def time(self, ms: int) -> str | int:
        return ms if self._epoch else self._iso(ms)

    def fix(
        self,
        ts_ms: int,
        x: float,
        y: float,
        heading: float,
        speed_ms: float,
        trip_m: float,
        event_io: int,
    ) -> Payload:
        """A valid-fix record at local position (x, y); received_at is set later."""
        proj = self._proj
        lon = round(proj.lon0 + x / proj.kx, 7)
        lat = round(proj.lat0 + y / proj.ky, 7)
        if self._rng.random() < 0.1:
            self.satellites = min(16, max(5, self.satellites + self._rng.choice((-1, 1))))
        alt = round(terrain_altitude(x, y))
        self.last_lonlat, self.last_alt = (lon, lat), alt
        return {
            "device_id": self.device_id,
            "timestamp": ts_ms if self._epoch else self._iso(ts_ms),
            "received_at": None,
            "codec": "8E",
            "priority": 1 if event_io else 0,
            "latitude": lat,
            "longitude": lon,
            "altitude": alt,
            "angle": round(heading) % 360,
            "satellites": self.satellites,
            "speed": round(speed_ms * 3.6),
            "event_io_id": event_io,
            "io": self._io(ts_ms, trip_m, speed_ms > 0.0, GNSS_FIX),
        }

    def no_fix(self, ts_ms: int, trip_m: float, zeroed: bool) -> Payload:
        """A record without a fix: last known position and 0 satellites, or 0,0 (firmware
        without any fix yet) with a few satellites — both are `fix_valid = false`."""
        lon, lat = (0.0, 0.0) if zeroed else self.last_lonlat
        return {
            "device_id": self.device_id,
            "timestamp": self.time(ts_ms),
            "received_at": None,
            "codec": "8E",
            "priority": 0,
            "latitude": lat,
            "longitude": lon,
            "altitude": 0 if zeroed else self.last_alt,
            "angle": 0,
            "satellites": self._rng.randint(0, 3) if zeroed else 0,
            "speed": 0,
            "event_io_id": 0,
            "io": self._io(ts_ms, trip_m, True, GNSS_NO_FIX),
        }

    def _io(self, ts_ms: int, trip_m: float, moving: bool, gnss: int) -> dict[str, Any]:
        self._count += 1
        if self._count % 10 == 1:  # slow-moving values: a new reading every ~10 records
            self._refresh_slow()
        io = self._io_base.copy()
        io[IO_MOVEMENT] = 1 if moving else 0
        io[IO_GNSS_STATUS] = gnss
        trip = int(trip_m)
        io["16"] = self.odometer_m + trip
        io["199"] = trip
        if self._count % self._beacon_every == 0:
            raw = ts_ms.to_bytes(6, "big") + self._rng.randbytes(6)
            io["385"] = {"__buffer": base64.b64encode(raw).decode("ascii")}
        return io

    def _refresh_slow(self) -> None:
        rng = self._rng
        self._io_base = {
            IO_IGNITION: 1,
            IO_MOVEMENT: 0,
            IO_GNSS_STATUS: GNSS_FIX,
            "21": rng.randint(3, 5),
            "181": rng.randint(8, 14),
            "182": rng.randint(6, 11),
            "66": rng.randint(13_700, 14_300),
            "67": rng.randint(4_050, 4_150),
            "241": self.operator,
            "16": 0,
            "199": 0,
            "11": self.iccid1,
            "14": self.iccid2,
        }


def terrain_altitude(x: float, y: float) -> float:
    """Gentle hills: a smooth function of position, so altitude is continuous on the road."""
    return (
        150.0 + 22.0 * math.sin(x / 900.0) + 15.0 * math.cos(y / 700.0 + 0.4 * math.sin(x / 1300.0))
    )
