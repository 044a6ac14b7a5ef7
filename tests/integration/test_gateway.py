"""`processor gateway` against real Redis and PostgreSQL: a simulated race through the
pipeline, the domain stage and the dispatcher (live stream only), watched over WebSocket
and SSE by race control and the public: snapshot, positions, changes with sequence
numbers, the board equal to `processor leaderboard --json`, scope filtering, refused
connections, resume after a reconnect, and a slow client coalesced."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from processor.core.settings import Settings
from processor.dispatch.deliveries import Delivery, OutboxEvent
from processor.dispatch.dispatcher import Dispatcher
from processor.dispatch.live import LivePublisher
from processor.gateway.clients import Client, Outgoing
from processor.gateway.command import GatewayService
from processor.gateway.scope import Scope, Subscription
from processor.observability.metrics import Metrics
from processor.tools.event_loader import load_event_rows, read_event_file
from processor.tools.leaderboard import read_stage_board, to_json
from processor.tools.simulator.event import load_event
from processor.tools.simulator.generator import GeneratorConfig, Simulation
from processor.tools.simulator.scenarios import Scenario, Stop
from tests.integration.gateway_clients import SseClient, WsClient, until
from tests.integration.test_domain_timing import feed
from tests.integration.test_pipeline import add_all

pytestmark = pytest.mark.integration

RC = "race-control-secret"
STAGE = 1


@pytest.fixture
async def race_db(db: asyncpg.Connection) -> asyncpg.Connection:
    await db.execute(
        "TRUNCATE public.timing_records, public.stage_results, public.penalties, public.alerts,"
        " telemetry.outbox, telemetry.position_attributes, telemetry.domain_outputs,"
        " telemetry.domain_progress"
    )
    await load_event_rows(db, read_event_file())
    await db.execute("UPDATE public.events SET public = true")
    return db


@pytest.fixture
def gw_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "live_enabled": True,
            "gateway_race_control_token": SecretStr(RC),
            "gateway_public_token": SecretStr(""),
            "gateway_interval_ms": 100,
            "dispatch_poll_s": 0.1,
        }
    )


@pytest.fixture
async def gateway(gw_settings: Settings, race_db: asyncpg.Connection) -> AsyncIterator[str]:
    async with GatewayService(gw_settings, port=0) as service:
        yield f"127.0.0.1:{service.port}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def simulation() -> Simulation:
    stop = Scenario(entry=2, stage=STAGE, action=Stop(fraction=0.5, duration_s=240))
    return Simulation(load_event(), GeneratorConfig(devices=4, seed=3, scenarios=(stop,)))


async def dispatch(settings: Settings) -> None:
    await asyncio.wait_for(Dispatcher(settings, Metrics()).run(until_empty=True), 60)


def changes(client: WsClient | SseClient, collection: str | None = None) -> list[dict[str, Any]]:
    return [c for c in client.of("change") if collection is None or c["collection"] == collection]


async def test_race_seen_by_race_control_and_the_public(
    gw_settings: Settings,
    gateway: str,
    session: aiohttp.ClientSession,
    redis_client: aioredis.Redis,
    race_db: asyncpg.Connection,
) -> None:
    rc, pub = WsClient(), SseClient()
    await rc.connect(session, f"ws://{gateway}/ws?stage={STAGE}&token={RC}")
    await pub.connect(session, f"http://{gateway}/sse?stage={STAGE}")
    try:
        await until(lambda: bool(rc.of("snapshot") and pub.of("snapshot")), 10, "snapshots")
        snap = rc.of("snapshot")[0]
        assert snap["subscription"] == {"event": 1, "stage": STAGE}
        assert snap["geometry"]["stages"][0]["route"]["type"] == "LineString"
        assert any(e["device"] for e in snap["entries"])
        assert "alerts" in snap
        assert "alerts" not in pub.of("snapshot")[0]

        await feed(gw_settings, redis_client, list(simulation().entries()))
        await dispatch(gw_settings)

        published = await redis_client.xlen(gw_settings.live_key)
        assert published > 0

        # Race control: every published change of its stage's event, in sequence order.
        def rc_caught_up() -> bool:
            return bool(changes(rc, "alerts")) and bool(rc.of("board"))

        await until(rc_caught_up, 20, "race control's alerts and board")
        seqs = [tuple(map(int, c["seq"].split("-"))) for c in changes(rc)]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        alert = changes(rc, "alerts")[-1]
        assert alert["data"]["kind"] in ("stopped", "stopped_on_stage", "stop")
        assert rc.of("positions")
        assert all("device" in p for m in rc.of("positions") for p in m["positions"])

        # The board is `processor leaderboard --json`'s, once the last one arrived.
        expected = json.loads(to_json(await read_stage_board(race_db, STAGE)))

        def board_final() -> bool:
            return bool(rc.of("board")) and rc.of("board")[-1]["board"] == expected

        await until(board_final, 10, "the final board")

        # The public: results, no alert, no IMEI, no note, anywhere.
        await until(lambda: bool(changes(pub, "stage_results")), 10, "public results")
        assert not changes(pub, "alerts")
        imeis = [r["imei"] for r in await race_db.fetch("SELECT imei FROM public.devices")]
        text = "\n".join(pub.raw)
        assert not [i for i in imeis if i in text]
        assert all("note" not in (c["data"] or {}) for c in changes(pub))
        assert pub.of("positions")
        assert pub.last_event_id == changes(pub)[-1]["seq"]
    finally:
        await rc.close()
        await pub.close()


async def test_refused_connections(
    gw_settings: Settings, session: aiohttp.ClientSession, race_db: asyncpg.Connection
) -> None:
    async with GatewayService(gw_settings, port=0) as service:
        gateway = f"127.0.0.1:{service.port}"
        async with session.get(f"http://{gateway}/sse?stage={STAGE}&token=wrong") as resp:
            assert resp.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"ws://{gateway}/ws?stage={STAGE}&token=wrong")
        assert refused.value.status == 401
        async with session.get(f"http://{gateway}/check?stage=999&token={RC}") as resp:
            assert resp.status == 404
        async with session.get(f"http://{gateway}/check?stage={STAGE}&device=X") as resp:
            assert resp.status == 400  # device filters are race control's
        async with session.get(f"http://{gateway}/check?stage={STAGE}") as resp:
            assert (await resp.json())["scope"] == "public"
        await race_db.execute("UPDATE public.events SET public = false")
        assert service.hub is not None
        await service.hub.refresh_roster()  # what the periodic refresh does
        async with session.get(f"http://{gateway}/check?stage={STAGE}") as resp:
            assert resp.status == 404  # a private event does not exist for the public
        async with session.get(f"http://{gateway}/check?stage={STAGE}&token={RC}") as resp:
            assert (await resp.json())["scope"] == "race_control"


def delivery(version: int, entry: int, status: str) -> Delivery:
    payload = {
        "collection": "stage_results",
        "change": "updated",
        "id": entry,
        "key": f"s{STAGE}:e{entry}",
        "event": 1,
        "stage": STAGE,
        "entry": entry,
        "data": {"id": entry, "status": status},
    }
    event = OutboxEvent(
        version,
        "stage_results",
        f"s{STAGE}:e{entry}",
        "updated",
        "stage_result.updated",
        json.dumps(payload),
        datetime.now(UTC),
    )
    return Delivery(event, "updated", (version,))


async def test_reconnect_resumes_or_resyncs(
    gw_settings: Settings,
    gateway: str,
    session: aiohttp.ClientSession,
    redis_client: aioredis.Redis,
) -> None:
    publisher = LivePublisher(redis_client, gw_settings.live_key, 1000)
    await publisher.publish([delivery(1, 1, "running")])
    url = f"ws://{gateway}/ws?stage={STAGE}&token={RC}"
    first = WsClient()
    await first.connect(session, url)
    await until(lambda: bool(first.of("snapshot")), 10, "the snapshot")
    await publisher.publish([delivery(2, 1, "finished")])
    await until(lambda: bool(changes(first)), 10, "a change")
    last = changes(first)[-1]["seq"]
    await first.close()

    # Missed while away: resumed from the stream, no snapshot, nothing twice.
    await publisher.publish([delivery(3, 2, "running"), delivery(4, 3, "running")])
    second = WsClient()
    await second.connect(session, f"{url}&since={last}")
    try:
        await until(lambda: len(changes(second)) >= 2, 10, "the missed changes")
        assert not second.of("snapshot")
        assert [c["version"] for c in changes(second)] == [3, 4]
    finally:
        await second.close()

    # Too old (trimmed away): a snapshot instead.
    await redis_client.xtrim(gw_settings.live_key, maxlen=1, approximate=False)
    third = WsClient()
    await third.connect(session, f"{url}&since={last}")
    try:
        await until(lambda: bool(third.of("snapshot")), 10, "a resync snapshot")
    finally:
        await third.close()


async def test_a_slow_client_gets_the_newest_state_and_delays_nobody(
    gw_settings: Settings, race_db: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    async with GatewayService(gw_settings, port=0) as service:
        hub = service.hub
        assert hub is not None
        sub = Subscription(event=1, stage=STAGE)
        slow, fast = (Client(Scope.RACE_CONTROL, sub, "test", 100) for _ in range(2))
        slow_got: list[dict[str, Any]] = []
        fast_got: list[tuple[float, dict[str, Any]]] = []

        async def slow_send(m: Outgoing) -> None:
            await asyncio.sleep(1.0)  # a tenth of the rate, and more
            slow_got.append(json.loads(m.body))

        async def fast_send(m: Outgoing) -> None:
            fast_got.append((time.monotonic(), json.loads(m.body)))

        stop = asyncio.Event()
        await hub.start(slow, None)
        await hub.start(fast, None)
        pumps = [
            asyncio.create_task(hub.pump(slow, slow_send, stop)),
            asyncio.create_task(hub.pump(fast, fast_send, stop)),
        ]
        try:
            entries = [e.fields() for e in simulation().entries()][:4000]
            for i in range(0, len(entries), 200):  # a burst of fixes over ~2 s
                await add_all(redis_client, gw_settings.stream, entries[i : i + 200])
                await asyncio.sleep(0.1)
            await until(lambda: len(slow_got) >= 3, 20, "the slow client's messages")
            cars = len(hub.latest)
            assert cars > 0
            for message in slow_got:
                if message["type"] == "positions":
                    devices = [p["device"] for p in message["positions"]]
                    assert len(devices) == len(set(devices)) <= cars  # one per car, ever
            assert len(slow.pending) <= cars
            fast_positions = [t for t, m in fast_got if m["type"] == "positions"]
            assert len(fast_positions) > len([m for m in slow_got if m["type"] == "positions"])
            gaps = [b - a for a, b in itertools.pairwise(fast_positions)]
            assert max(gaps) < 0.9  # never held up by the slow one's 1 s writes
            newest = {f.device_id: f.ts_ms for f in hub.latest.all()}
            await until(lambda: len(slow.pending) == 0, 10, "the slow client's last write")
            await asyncio.sleep(0)  # (its last send is in flight: wait for it below)
            await until(
                lambda: any(
                    m["type"] == "positions"
                    and all(newest.get(p["device"]) == p["ts"] for p in m["positions"])
                    for m in slow_got[-2:]
                ),
                10,
                "the newest state at the slow client",
            )
        finally:
            stop.set()
            await asyncio.gather(*pumps, return_exceptions=True)
