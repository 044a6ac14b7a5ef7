"""The fan-out: the feeds' positions and changes to every client, each as its scope and
subscription allow, encoded once per group of clients that see the same thing.

Positions are coalesced: the feed only records which cars moved; every interval the
hub merges their newest fix into each client's pending map (`coalesce`). Changes are
queued per client as they are read (`clients`). A stage's board is re-read from
PostgreSQL once per interval when its results changed, whoever watches it.

Invariant: nothing here waits on a client. Writing is each client's own task
(`pump`); a client that cannot keep up only loses intermediate states (coalesced
positions, a snapshot in place of an overflowing queue), never delays another.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, cast

import asyncpg
import msgspec
import redis.asyncio as aioredis
import structlog

from processor.core.position import Position
from processor.dispatch.live import FIELD
from processor.gateway import queries
from processor.gateway.clients import Client, Outgoing
from processor.gateway.latest import LatestFixes
from processor.gateway.metrics import GatewayMetrics
from processor.gateway.roster import Roster
from processor.gateway.scope import Scope, Subscription
from processor.gateway.sequence import parse_id, plan_resume
from processor.gateway.visibility import Change, change_view, position_view

log = structlog.get_logger(__name__)
_encode = msgspec.json.encode
SEND_TIMEOUT_S = 10.0
BOARD_COLLECTIONS = frozenset({"stage_results", "penalties"})

Send = Callable[[Outgoing], Awaitable[None]]
PING = Outgoing("ping", None, b'{"type":"ping"}')


class Hub:
    def __init__(
        self,
        metrics: GatewayMetrics,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        *,
        live_key: str,
        max_devices: int,
        queue_limit: int,
    ) -> None:
        self.metrics = metrics
        self.pool = pool
        self.redis = redis
        self.live_key = live_key
        self.queue_limit = queue_limit
        self.roster = Roster()
        self.latest = LatestFixes(max_devices)
        self.groups: dict[tuple[object, ...], set[Client]] = {}
        self._moved: set[str] = set()
        self._dirty_boards: set[tuple[int | None, int | None]] = set()  # (event, stage)

    # -- clients -------------------------------------------------------------------

    @property
    def client_count(self) -> int:
        return sum(len(g) for g in self.groups.values())

    def add(self, client: Client) -> None:
        self.groups.setdefault(client.group(), set()).add(client)
        self.metrics.clients.labels(client.scope.value, client.transport).inc()
        client.pending.merge(self._positions(client.scope, client.sub, self.latest.all()))

    def remove(self, client: Client) -> None:
        group = self.groups.get(client.group())
        if group is None or client not in group:
            return
        group.discard(client)
        if not group:
            del self.groups[client.group()]
        self.metrics.clients.labels(client.scope.value, client.transport).dec()

    async def start(self, client: Client, since: str | None) -> str:
        """Register `client` and decide how it starts: `resume` (the changes after
        `since`, from the live stream) or `snapshot`."""
        self.add(client)
        if since is not None and await self._resume(client, since):
            client.resync = False
            return "resume"
        client.resync = True
        client.wake.set()
        return "snapshot"

    async def _resume(self, client: Client, since: str) -> bool:
        info = await self._stream_info()
        if info is None:
            return False
        last, deleted, first = info
        plan = plan_resume(since, last_generated=last, max_deleted=deleted, first=first)
        if plan != "resume":
            return False
        raw = cast(
            list[tuple[bytes, dict[bytes, bytes] | None]],
            await self.redis.xrange(
                self.live_key, min=f"({since}", max="+", count=self.queue_limit + 1
            ),
        )
        if len(raw) > self.queue_limit:
            return False  # more missed than a queue holds: a snapshot is smaller
        since_id = parse_id(since)
        assert since_id is not None
        client.floor = since_id
        for entry_id, fields in raw:
            change = change_of(entry_id, fields)
            if change is None:
                continue
            view = change_view(change, client.sub, client.scope, self.roster)
            if view is not None:
                client.backfill.append(_outgoing(view, change))
        client.wake.set()
        return True

    async def _stream_info(self) -> tuple[str, str, str | None] | None:
        """(last-generated-id, max-deleted-entry-id, first entry id or None when empty)
        of the live stream; None when there is no live stream."""
        try:
            info = await self.redis.xinfo_stream(self.live_key)
        except aioredis.ResponseError:
            return None
        fields = {_text(k): v for k, v in info.items()}
        last = _text(fields.get("last-generated-id"))
        deleted = _text(fields.get("max-deleted-entry-id"))
        head = fields.get("first-entry")
        first = _text(head[0]) if head else None
        return last or "0-0", deleted or "0-0", first

    async def snapshot(self, client: Client) -> Outgoing:
        """The client's current state: its sequence number is the live stream's last id
        read before PostgreSQL, so every change after it reaches the client as a delta."""
        started = time.monotonic()
        info = await self._stream_info()
        seq = info[0] if info else "0-0"
        sub, scope = client.sub, client.scope
        async with self.pool.acquire() as conn:
            board = await queries.read_board(conn, sub)
            geometry = await queries.read_geometry(conn, sub)
            rows = await queries.read_rows(conn, sub, scope)
        self.metrics.snapshot_seconds.observe(time.monotonic() - started)
        assert sub.event is not None
        event = self.roster.events[sub.event]
        parsed = parse_id(seq)
        client.floor = max(client.floor, parsed or (0, 0))
        body = {
            "type": "snapshot",
            "seq": seq,
            "scope": scope.value,
            "subscription": {"event": sub.event, "stage": sub.stage},
            "event": {"id": event.id, "name": event.name, "timezone": event.timezone},
            "entries": queries.entries_view(self.roster, sub, scope),
            "geometry": geometry,
            "board": board,
            **rows,
        }
        return Outgoing("snapshot", seq, _encode(body))

    # -- the feeds -----------------------------------------------------------------

    def on_fix(self, fix: Position) -> None:
        if self.latest.offer(fix):
            self._moved.add(fix.device_id)

    def on_change(self, change: Change) -> None:
        for group in self.groups.values():
            sample = next(iter(group))
            view = change_view(change, sample.sub, sample.scope, self.roster)
            if view is None:
                continue
            message = _outgoing(view, change)
            for client in group:
                if not client.offer(message):
                    self.metrics.drops.labels("overflow").inc()
        if change.collection in BOARD_COLLECTIONS:
            self._dirty_boards.add((change.event, change.stage))
            self._dirty_boards.add((change.event, None))

    async def tick(self) -> None:
        """Once per interval: moved cars to every client, changed boards re-read."""
        self.metrics.devices.set(len(self.latest))
        moved = [f for d in self._moved if (f := self.latest.get(d)) is not None]
        self._moved.clear()
        if moved:
            for group in self.groups.values():
                sample = next(iter(group))
                items = self._positions(sample.scope, sample.sub, moved)
                if not items:
                    continue
                for client in group:
                    before = client.pending.replaced
                    client.pending.merge(items)
                    replaced = client.pending.replaced - before
                    if replaced:
                        self.metrics.drops.labels("coalesced").inc(replaced)
                    client.wake.set()
        if self._dirty_boards:
            dirty, self._dirty_boards = self._dirty_boards, set()
            await self._boards(dirty)

    async def _boards(self, dirty: set[tuple[int | None, int | None]]) -> None:
        read: dict[tuple[int | None, int | None], Outgoing | None] = {}
        for group in list(self.groups.values()):
            sample = next(iter(group))
            key = (sample.sub.event, sample.sub.stage)
            if key not in dirty:
                continue
            if key not in read:
                read[key] = await self._board(sample.sub)
            message = read[key]
            if message is not None:
                for client in group:
                    client.set_board(message)

    async def _board(self, sub: Subscription) -> Outgoing | None:
        started = time.monotonic()
        async with self.pool.acquire() as conn:
            board = await queries.read_board(conn, sub)
        self.metrics.snapshot_seconds.observe(time.monotonic() - started)
        if board is None:
            return None
        return Outgoing("board", None, _encode({"type": "board", "board": board}))

    def _positions(
        self, scope: Scope, sub: Subscription, fixes: list[Position]
    ) -> list[tuple[object, dict[str, Any]]]:
        out = []
        for fix in fixes:
            view = position_view(fix, sub, scope, self.roster)
            if view is not None:
                out.append(view)
        return out

    # -- writing to one client -----------------------------------------------------

    async def pump(
        self, client: Client, send: Send, stop: asyncio.Event, heartbeat_s: float = 15.0
    ) -> None:
        """Write to `client` until `stop` or a too slow write (a failed one raises): a
        snapshot when it needs one, its changes, its board, then its positions as one
        message; a ping when there was nothing for `heartbeat_s`."""
        m = self.metrics
        while not stop.is_set():
            waiter = asyncio.ensure_future(client.wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                done, _ = await asyncio.wait(
                    {waiter, stopper}, timeout=heartbeat_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()
                stopper.cancel()
            if stop.is_set():
                return
            client.wake.clear()
            try:
                if not done:
                    await self._send(send, PING)
                    continue
                if client.resync:
                    client.resync = False
                    client.queue.clear()
                    client.backfill = []
                    await self._send(send, await self.snapshot(client))
                for message in client.take_changes():
                    if client.advance(message.seq):
                        await self._send(send, message)
                if client.board is not None:
                    board, client.board = client.board, None
                    await self._send(send, board)
                items = client.pending.take()
                if items:
                    now = time.time()
                    oldest = min(i["ts"] for i in items) / 1000
                    body = _encode({"type": "positions", "t": int(now * 1000), "positions": items})
                    await self._send(send, Outgoing("positions", None, body))
                    m.latency.labels("position").observe(max(0.0, now - oldest))
            except TimeoutError:
                m.drops.labels("closed").inc()
                log.info("gateway_client_too_slow", scope=client.scope.value)
                return

    async def _send(self, send: Send, message: Outgoing) -> None:
        await asyncio.wait_for(send(message), SEND_TIMEOUT_S)
        self.metrics.messages.labels(message.type).inc()
        if message.origin_s is not None:
            self.metrics.latency.labels("change").observe(max(0.0, time.time() - message.origin_s))

    # -- the roster ----------------------------------------------------------------

    async def refresh_roster(self) -> None:
        async with self.pool.acquire() as conn:
            self.roster = await queries.read_roster(conn)


def change_of(entry_id: bytes | str, fields: dict[bytes, bytes] | None) -> Change | None:
    """A live stream entry → a change (None when it is not one)."""
    if not fields or FIELD not in fields:
        return None
    with contextlib.suppress(msgspec.DecodeError):
        item = msgspec.json.decode(fields[FIELD])
        if isinstance(item, dict):
            return Change.from_item(_text(entry_id), item)
    return None


def _outgoing(view: dict[str, Any], change: Change) -> Outgoing:
    return Outgoing("change", change.seq, _encode(view), _epoch(change.created_at))


def _epoch(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
