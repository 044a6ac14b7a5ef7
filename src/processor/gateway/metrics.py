"""The gateway's metrics, on a registry of its own (served at its `/metrics`).

Labels are low-cardinality: scope, transport, message type, reason; never a client,
device or event id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

from processor import __version__

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        Info("processor_build", "Processor version.", registry=r).info({"version": __version__})
        self.clients = Gauge(
            "processor_gateway_clients",
            "Connected clients, by scope and transport.",
            ["scope", "transport"],
            registry=r,
        )
        self.connections = Counter(
            "processor_gateway_connections",
            "Connections accepted, by scope and how they started (snapshot or resume).",
            ["scope", "start"],
            registry=r,
        )
        self.refused = Counter(
            "processor_gateway_refused",
            "Connections refused, by reason (unauthorized, subscription, full).",
            ["reason"],
            registry=r,
        )
        self.messages = Counter(
            "processor_gateway_messages",
            "Messages written to clients, by type.",
            ["type"],
            registry=r,
        )
        self.drops = Counter(
            "processor_gateway_drops",
            "Messages a client never got as such, by reason: `coalesced` (a position"
            " replaced by a newer one before it was sent), `overflow` (a client's queue"
            " was full: it is sent a fresh snapshot instead), `closed` (a client too slow"
            " to write to was disconnected).",
            ["reason"],
            registry=r,
        )
        self.latency = Histogram(
            "processor_gateway_delivery_latency_seconds",
            "From the change (outbox event time) or the position (stream entry time) to"
            " its write to a client, by kind (change, position).",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.feed_entries = Counter(
            "processor_gateway_feed_entries",
            "Entries read from Redis, by feed (positions, live).",
            ["feed"],
            registry=r,
        )
        self.devices = Gauge(
            "processor_gateway_devices", "Devices whose latest fix is held.", registry=r
        )
        self.snapshot_seconds = Histogram(
            "processor_gateway_snapshot_seconds",
            "Time to read a snapshot or a board from PostgreSQL.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
