"""The HTTP endpoints of a running `processor run`: metrics that add up, readiness that
follows PostgreSQL, and no secret in any output."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from processor.core.settings import Settings
from tests.conftest import ADMIN_URL, REDIS_URL
from tests.entries import BASE_MS, bad_entry, entry
from tests.faults.harness import ProcessorProcess, settings_env, wait_for

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in values.items() if n == name)


@pytest.fixture
def sync_redis(stream_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        keys = list(client.scan_iter(match=f"{stream_prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_metrics_add_up_to_the_entries_sent(settings: Settings, sync_redis: redis.Redis) -> None:
    good = [entry(f"M{d}", BASE_MS + s * 1000) for d in range(5) for s in range(200)]
    mixed = good + good[:100] + [bad_entry("json"), bad_entry("version")] * 10
    for fields in mixed:
        sync_redis.xadd(settings.stream, fields)  # type: ignore[arg-type]
    port = free_port()
    proc = ProcessorProcess(settings, http_enabled="true", http_port=str(port)).start()
    try:

        def drained() -> bool:
            status, body = get(port, "/metrics")
            if status != 200:
                return False
            values = samples(body)
            done = (
                total(values, "processor_positions_inserted_total")
                + total(values, "processor_duplicates_total")
                + total(values, "processor_rejections_total")
            )
            return done == len(mixed)

        assert wait_for(drained, 30), proc.output()
        values = samples(get(port, "/metrics")[1])
        assert total(values, "processor_positions_inserted_total") == 1000
        assert total(values, "processor_duplicates_total") == 100
        assert values[("processor_rejections_total", (("reason", "malformed_json"),))] == 10
        assert values[("processor_dead_letters_total", (("reason", "unsupported_version"),))] == 10
        assert total(values, "processor_entries_read_total") == len(mixed)
        assert total(values, "processor_commit_latency_seconds_count") > 0
        assert values[("processor_build_info", (("version", "0.1.0"),))] == 1
        assert get(port, "/healthz")[0] == 200
        assert get(port, "/readyz")[0] == 200
    finally:
        proc.close()


def test_readyz_follows_postgresql(settings: Settings, database_url: str) -> None:
    port = free_port()
    proc = ProcessorProcess(settings, http_enabled="true", http_port=str(port)).start()
    name = urlsplit(database_url).path.lstrip("/")
    try:
        assert wait_for(lambda: get(port, "/readyz")[0] == 200, 30), proc.output()
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND application_name = 'processor'",
                    (name,),
                )
                started = time.monotonic()
                assert wait_for(lambda: get(port, "/readyz")[0] == 503, 20), proc.output()
                assert time.monotonic() - started < 10
                _, body = get(port, "/readyz")
                assert '"postgres":"error' in body
                assert '"redis":"ok"' in body
                assert get(port, "/healthz")[0] == 200  # alive, just not ready
            finally:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert wait_for(lambda: get(port, "/readyz")[0] == 200, 30), proc.output()
    finally:
        proc.close()


SECRET = "hunter2-Secret-Pw"


def test_no_secret_in_logs_config_or_errors(settings: Settings, sync_redis: redis.Redis) -> None:
    parts = urlsplit(settings.database_url.get_secret_value())
    with_password = parts._replace(
        netloc=f"postgres:{SECRET}@{parts.hostname}:{parts.port or 5432}"
    )
    secret_settings = settings.model_copy(
        update={"database_url": type(settings.database_url)(with_password.geturl())}
    )
    for fields in [entry("S1", BASE_MS), bad_entry("json")]:
        sync_redis.xadd(settings.stream, fields)  # type: ignore[arg-type]
    ok = ProcessorProcess(secret_settings, "--until-idle", log_level="DEBUG").start()
    try:
        assert ok.wait(60) == 0, ok.output()
        assert SECRET not in ok.output()
    finally:
        ok.close()
    # Unreachable database: errors are logged, the password is not.
    closed = free_port()
    down_url = with_password._replace(netloc=f"postgres:{SECRET}@127.0.0.1:{closed}").geturl()
    down = ProcessorProcess(settings, database_url=down_url, log_level="DEBUG").start()
    try:
        assert wait_for(lambda: "database_unavailable" in down.output(), 20), down.output()
        assert SECRET not in down.output()
    finally:
        down.close()
    env = settings_env(
        settings, database_url=down_url, redis_url=f"redis://u:{SECRET}@127.0.0.1:6379/0"
    )
    shown = subprocess.run(
        [sys.executable, "-m", "processor", "config"], env=env, capture_output=True, timeout=60
    )
    assert shown.returncode == 0
    assert SECRET not in shown.stdout.decode() + shown.stderr.decode()
    assert "***" in shown.stdout.decode()
