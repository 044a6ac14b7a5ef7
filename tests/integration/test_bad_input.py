"""The bad-input catalogue beyond the contract vectors, through the real pipeline."""

from __future__ import annotations

import json
import time
import tracemalloc
from typing import Any

import msgspec
import pytest
import redis

from processor.core.contract import decode_entry
from processor.core.position import Rejection
from processor.core.settings import Settings
from tests.conftest import REDIS_URL
from tests.entries import BASE_MS, entry, payload
from tests.faults.harness import ProcessorProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def client(stream_prefix: str) -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def _cleanup(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _dead_letters(client: redis.Redis, key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    found: Any = client.xrange(key)
    for _, fields in found:
        reason = fields[b"reason"].decode()
        counts[reason] = counts.get(reason, 0) + 1
    return counts


CATALOGUE: list[tuple[str, dict[bytes, bytes], str]] = [
    ("ten_megabytes", {b"v": b"1", b"payload": b"{" + b" " * 10_000_000 + b"}"}, "too_large"),
    (
        "hundred_thousand_keys",
        {b"v": b"1", b"payload": json.dumps({f"k{i}": i for i in range(100_000)}).encode()},
        "too_large",
    ),
    ("deeply_nested", {b"v": b"1", b"payload": b"[" * 30_000 + b"]" * 30_000}, "malformed_json"),
    (
        "nested_in_a_known_key",
        {
            b"v": b"1",
            b"payload": msgspec.json.encode(payload("N1", BASE_MS, io={"1": [[[[[[]]]]]]})),
        },
        "invalid_field",
    ),
    ("invalid_utf8", {b"v": b"1", b"payload": b'{"device_id": "\xff\xfe"}'}, "malformed_json"),
    ("binary_garbage", {b"v": b"1", b"payload": bytes(range(256)) * 10}, "malformed_json"),
    ("empty_payload", {b"v": b"1", b"payload": b""}, "malformed_json"),
    ("no_payload_field", {b"v": b"1"}, "malformed_json"),
    ("version_garbage", {b"v": b"\x00\xff", b"payload": b"{}"}, "unsupported_version"),
    (
        "week_rollover",
        {
            b"v": b"1",
            b"payload": msgspec.json.encode(
                payload("WR", BASE_MS - 1024 * 7 * 86_400_000, received_at=BASE_MS + 400)
            ),
        },
        "timestamp_out_of_range",
    ),
]


@pytest.mark.parametrize(("name", "fields", "reason"), CATALOGUE[:2], ids=["10MB", "100k-keys"])
def test_oversized_payloads_are_refused_without_parsing(
    name: str, fields: dict[bytes, bytes], reason: str
) -> None:
    tracemalloc.start()
    try:
        result = decode_entry("1-0", fields)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(result, Rejection)
    assert result.reason.value == reason
    assert peak < 64 * 1024, f"{name}: decoding allocated {peak} bytes"


def test_catalogue_is_dead_lettered_with_reasons(
    settings: Settings, client: redis.Redis, stream_prefix: str
) -> None:
    try:
        for _, fields, _ in CATALOGUE:
            client.xadd(settings.stream, fields)  # type: ignore[arg-type]
        client.xadd(settings.stream, entry("GOOD", BASE_MS))  # type: ignore[arg-type]
        proc = ProcessorProcess(settings, "--until-idle", read_count="10").start()
        try:
            assert proc.wait(120) == 0, proc.output()
        finally:
            proc.close()
        expected: dict[str, int] = {}
        for _, _, reason in CATALOGUE:
            expected[reason] = expected.get(reason, 0) + 1
        assert _dead_letters(client, settings.dlq_stream) == expected
        assert client.xpending(settings.stream, settings.group)["pending"] == 0
    finally:
        _cleanup(client, stream_prefix)


def test_same_key_many_times_in_one_batch_and_across_batches_is_stored_once(
    settings: Settings, client: redis.Redis, stream_prefix: str
) -> None:
    try:
        same = [entry("SAME", BASE_MS, speed=float(i)) for i in range(300)]
        for fields in same[:200]:
            client.xadd(settings.stream, fields)  # type: ignore[arg-type]
        proc = ProcessorProcess(settings, "--until-idle", batch_max_rows="50").start()
        try:
            assert proc.wait(60) == 0, proc.output()
        finally:
            proc.close()
        for fields in same[200:]:
            client.xadd(settings.stream, fields)  # type: ignore[arg-type]
        again = ProcessorProcess(settings, "--until-idle", batch_max_rows="50").start()
        try:
            assert again.wait(60) == 0, again.output()
        finally:
            again.close()
        import psycopg

        with psycopg.connect(settings.database_url.get_secret_value()) as conn:
            rows = conn.execute(
                "SELECT speed FROM telemetry.positions WHERE device_id = 'SAME'"
            ).fetchall()
        assert rows == [(0.0,)]  # the first record wins
    finally:
        _cleanup(client, stream_prefix)


def test_a_flood_of_bad_entries_is_dead_lettered_with_rate_limited_logs(
    settings: Settings, client: redis.Redis, stream_prefix: str
) -> None:
    flood = 100_000
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(flood):
            pipe.xadd(settings.stream, {b"v": b"1", b"payload": b"{broken %d" % i})
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
        started = time.monotonic()
        proc = ProcessorProcess(settings, "--until-idle", log_rejections_per_s="5").start()
        try:
            assert proc.wait(110) == 0, proc.output()
            elapsed = time.monotonic() - started
            logged = proc.output().count("entry_rejected")
        finally:
            proc.close()
        assert client.xlen(settings.dlq_stream) == flood
        assert client.xpending(settings.stream, settings.group)["pending"] == 0
        # At most the burst plus 5 per second were logged; the rest were counted.
        assert logged <= 10 + 5 * elapsed
        print(f"{flood} bad entries dead-lettered in {elapsed:.1f} s, {logged} log lines")
    finally:
        _cleanup(client, stream_prefix)
