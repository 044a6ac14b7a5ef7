"""The naive peer: the consumer a competent user writes without this project.

redis-py XREADGROUP, json.loads, a small sentinel decoder, psycopg executemany with
ON CONFLICT DO NOTHING, XACK. Correct (idempotent, acknowledges after commit) but plain.
Run as a subprocess by the benchmark; prints one JSON line of its own measurements.
"""

from __future__ import annotations

import base64
import contextlib
import json
import resource
import sys
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis

from processor.tools.bench.rss import peak_rss_mb

INSERT = (
    "INSERT INTO telemetry.positions (device_id, ts, received_at, latitude, longitude, altitude,"
    " heading, speed, satellites, priority, event_io_id, codec, fix_valid, io, stream_id)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (device_id, ts) DO NOTHING"
)


def _value(v: Any) -> Any:
    if isinstance(v, dict) and len(v) == 1:
        if "__bigint" in v:
            return int(v["__bigint"])
        if "__buffer" in v:
            return base64.b64decode(v["__buffer"]).hex()
    return v


def _time(v: Any) -> datetime:
    v = _value(v)
    if isinstance(v, int):
        return datetime.fromtimestamp(v / 1000, tz=UTC)
    return datetime.fromisoformat(v)


def main(database_url: str, redis_url: str, stream: str, group: str) -> None:
    r = redis.Redis.from_url(redis_url)
    with contextlib.suppress(redis.ResponseError):
        r.xgroup_create(stream, group, id="0")
    started = time.perf_counter()
    stored = 0
    with psycopg.connect(database_url) as conn:
        while True:
            reply: Any = r.xreadgroup(group, "naive", {stream: ">"}, count=1000, block=500)
            if not reply:
                break
            rows = []
            ids = []
            for entry_id, fields in reply[0][1]:
                ids.append(entry_id)
                try:
                    p = json.loads(fields[b"payload"])
                    rows.append(
                        (
                            p["device_id"],
                            _time(p["timestamp"]),
                            _time(p.get("received_at") or int(entry_id.split(b"-")[0])),
                            float(p["latitude"]),
                            float(p["longitude"]),
                            p.get("altitude"),
                            p.get("angle"),
                            p.get("speed"),
                            p.get("satellites"),
                            p.get("priority") or 0,
                            p.get("event_io_id"),
                            p.get("codec"),
                            p.get("satellites") != 0,
                            json.dumps({k: _value(v) for k, v in (p.get("io") or {}).items()}),
                            entry_id.decode(),
                        )
                    )
                except (KeyError, ValueError, TypeError):
                    continue  # a naive consumer just skips what it cannot parse
            with conn.cursor() as cur:
                cur.executemany(INSERT, rows)
            conn.commit()
            r.xack(stream, group, *ids)
            stored += len(rows)
    wall = time.perf_counter() - started - 0.5  # the final empty blocking read
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "max_rss_mb": peak_rss_mb(),
                "parsed": stored,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
