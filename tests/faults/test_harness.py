"""The harness itself: the invariant checker catches what it must, the proxy does what it says."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from processor.core.settings import Settings
from tests.conftest import REDIS_URL
from tests.entries import BASE_MS
from tests.faults.harness import (
    Db,
    Ledger,
    TcpProxy,
    add_items,
    check_invariant,
    redis_port,
    valid_items,
)

pytestmark = pytest.mark.faults


def test_checker_reports_every_kind_of_breach(
    settings: Settings, sync_redis: redis.Redis, sync_db: Db
) -> None:
    ledger = Ledger()
    items = valid_items(2, 3)  # six keys
    items.append((items[0][0], items[0][1], None))  # a re-send of the first
    items.append(({b"v": b"2", b"payload": b"{}"}, None, "unsupported_version"))
    add_items(sync_redis, settings.stream, items, ledger)
    sync_redis.xgroup_create(settings.stream, settings.group, id="0")
    sync_redis.xreadgroup(settings.group, "c", {settings.stream: ">"}, count=1)  # one pending
    ids = sorted(ledger.ids_by_key[("K0000", BASE_MS)])
    sync_db.execute(
        "INSERT INTO telemetry.positions (device_id, ts, received_at, latitude, longitude,"
        " fix_valid, stream_id) VALUES ('K0000', to_timestamp(%s / 1000.0), now(), 0, 0, true, %s),"
        " ('K0001', to_timestamp(%s / 1000.0), now(), 0, 0, true, 'not-an-id'),"
        " ('ZZ', now(), now(), 0, 0, true, '1-1')",
        (BASE_MS, ids[0], BASE_MS),
    )
    sync_redis.xadd(settings.dlq_stream, {b"reason": b"invalid_field", b"source_id": ids[0]})

    outcome = check_invariant(sync_db, sync_redis, settings, ledger)
    text = "\n".join(outcome.problems)
    assert "4 keys lost" in text
    assert "not one of" in text  # K0001 stored from an entry that does not carry it
    assert "never produced" in text  # ZZ
    assert "still pending" in text
    assert "group lag" in text
    assert "unexpected dead letter" in text
    assert "1 invalid entries without a dead letter" in text
    assert outcome.duplicate_entries == 1


def test_proxy_pauses_cuts_refuses_and_loses_replies(
    make_proxy: Callable[..., TcpProxy], stream_prefix: str
) -> None:
    proxy = make_proxy(redis_port(REDIS_URL))
    direct = redis.Redis.from_url(REDIS_URL)
    client = redis.Redis.from_url(
        f"redis://127.0.0.1:{proxy.port}/0", socket_timeout=1, socket_connect_timeout=1
    )
    key = f"{stream_prefix}:proxy"
    try:
        assert client.ping()
        proxy.pause()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        proxy.cut()
        proxy.resume()
        assert client.ping()
        assert proxy.cut() == 1
        proxy.refuse(True)
        with pytest.raises(redis.ConnectionError):
            client.ping()
        proxy.refuse(False)
        proxy.cut_on(b"INCR", forward=True)  # runs, reply lost
        proxy.cut_on(b"INCR", forward=False)  # never runs
        for _ in range(2):
            with pytest.raises(redis.ConnectionError):
                client.incr(key)
        assert proxy.fired() == 2
        assert direct.get(key) == b"1"
    finally:
        direct.delete(key)
        direct.close()
        client.close()
