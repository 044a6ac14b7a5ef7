"""The live feed: every delivery of the outbox, also on a Redis stream for gateways.

`processor gateway` instances read `<stream>:live` (`Settings.live_key`) to push result,
ranking, penalty and alert changes to browsers without ever asking Directus or the
database per change. The dispatcher publishes a round's deliveries after Directus (when
configured) confirmed them and before it records them delivered, so the stream carries
what Directus has, in the same version order per row. The stream is trimmed to about
`PROCESSOR_LIVE_MAXLEN` entries: it is a replay window for reconnecting clients, not a
store (a client older than the window gets a snapshot from PostgreSQL instead).

Invariant: every delivery recorded as delivered was published (a failure to publish
fails the round, which is retried); a crash between publishing and recording publishes
the same version again, which readers drop (they keep the highest version per row).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from processor.dispatch.deliveries import Delivery
from processor.dispatch.directus import DeliveryError

FIELD = b"d"  # one field per entry: the delivery's item as JSON (`Delivery.item`)


class LivePublisher:
    """XADD each delivery, in version order, in one round trip."""

    def __init__(self, redis: aioredis.Redis, stream: str, maxlen: int) -> None:
        self.redis = redis
        self.stream = stream
        self.maxlen = maxlen

    async def publish(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        pipe = self.redis.pipeline(transaction=False)
        for d in deliveries:
            pipe.xadd(
                self.stream,
                {FIELD: msgspec.json.encode(d.item())},
                maxlen=self.maxlen,
                approximate=True,
            )
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise DeliveryError("live_unavailable", f"{type(exc).__name__}: {exc}"[:300]) from None

    async def close(self) -> None:
        await self.redis.aclose()
