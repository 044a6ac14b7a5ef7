"""Every Prometheus metric the processor exports, on a registry of its own.

A registry per `Metrics` instance keeps tests and several in-process pipelines apart.
Labels are low-cardinality by construction: never a device id or stream id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

from processor import __version__

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_ROWS_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)


class Metrics:
    """The processor's metrics; one instance per process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        Info("processor_build", "Processor version.", registry=r).info({"version": __version__})
        self.entries_read = Counter(
            "processor_entries_read",
            "Stream entries read, by how they reached this consumer.",
            ["source"],
            registry=r,
        )
        self.positions_inserted = Counter(
            "processor_positions_inserted", "Positions newly stored.", registry=r
        )
        self.duplicates = Counter(
            "processor_duplicates",
            "Entries whose (device_id, ts) was already stored or seen.",
            ["stage"],
            registry=r,
        )
        self.rejections = Counter(
            "processor_rejections", "Entries refused, by reason code.", ["reason"], registry=r
        )
        self.dead_letters = Counter(
            "processor_dead_letters",
            "Entries written to the dead-letter stream, by reason code.",
            ["reason"],
            registry=r,
        )
        self.late_positions = Counter(
            "processor_late_positions",
            "Positions older than the newest already seen for their device.",
            registry=r,
        )
        self.implied_speed_exceeded = Counter(
            "processor_implied_speed_exceeded",
            "Positions whose implied speed from the previous fix exceeds the maximum.",
            registry=r,
        )
        self.batch_rows = Histogram(
            "processor_batch_rows", "Rows per written batch.", buckets=_ROWS_BUCKETS, registry=r
        )
        self.write_duration = Histogram(
            "processor_write_duration_seconds",
            "Time to write and commit one batch (including retries).",
            buckets=_WRITE_BUCKETS,
            registry=r,
        )
        self.commit_latency = Histogram(
            "processor_commit_latency_seconds",
            "From received_at (tcp-ingestion) to the commit of the position.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batches_in_flight = Gauge(
            "processor_batches_in_flight", "Batches written but not yet acknowledged.", registry=r
        )
        self.retries = Counter(
            "processor_retries", "Retried operations, by error class.", ["error_class"], registry=r
        )
        self.claimed = Counter(
            "processor_claimed",
            "Entries claimed from other (dead or slow) consumers.",
            registry=r,
        )
        self.trimmed_pending = Counter(
            "processor_trimmed_pending",
            "Pending entries whose fields were trimmed from the stream, acknowledged.",
            registry=r,
        )
        self.group_recreated = Counter(
            "processor_group_recreated",
            "Consumer group found missing (NOGROUP) and recreated from ID 0.",
            registry=r,
        )
        self.redis_errors = Counter(
            "processor_redis_errors", "Redis errors, by operation.", ["operation"], registry=r
        )
        self.db_errors = Counter(
            "processor_db_errors", "PostgreSQL errors, by error class.", ["error_class"], registry=r
        )
        self.notices_published = Counter(
            "processor_notices_published",
            "Committed notices published for the domain stage.",
            registry=r,
        )
        self.log_suppressed = Counter(
            "processor_log_suppressed", "Log events held back by rate limiting.", registry=r
        )
        self.state_devices = Gauge(
            "processor_state_devices", "Devices held in the bounded state.", registry=r
        )
        self.state_evictions = Counter(
            "processor_state_evictions", "Devices evicted from the bounded state.", registry=r
        )
        self.stream_length = Gauge(
            "processor_stream_length", "Entries in the input stream (XLEN).", registry=r
        )
        self.consumer_lag = Gauge(
            "processor_consumer_lag",
            "Entries in the stream not yet delivered to the group (XINFO GROUPS lag).",
            registry=r,
        )
        self.pending = Gauge(
            "processor_pending_entries",
            "Entries delivered to the group but not yet acknowledged.",
            registry=r,
        )
        self.dlq_length = Gauge(
            "processor_dlq_length", "Entries in the dead-letter stream.", registry=r
        )
        self.db_pool = Gauge(
            "processor_db_pool_connections",
            "PostgreSQL pool connections, by state.",
            ["state"],
            registry=r,
        )
        self.domain_notices = Counter(
            "processor_domain_notices",
            "Committed notices handled and acknowledged by the domain stage.",
            registry=r,
        )
        self.domain_windows = Counter(
            "processor_domain_windows",
            "Device windows recomputed by the domain stage.",
            registry=r,
        )
        self.domain_fast_windows = Counter(
            "processor_domain_fast_windows",
            "Device windows the domain stage's batched fast path settled (nothing changed).",
            registry=r,
        )
        self.domain_failures = Counter(
            "processor_domain_failures",
            "Domain batches that failed and will be retried (notices left pending).",
            registry=r,
        )
        self.domain_retries = Counter(
            "processor_domain_retries",
            "Domain transactions retried in place after a transient error (deadlock,"
            " serialization failure, lost connection, timeout), by operation and error class.",
            ["operation", "error_class"],
            registry=r,
        )
        self.domain_restarts = Counter(
            "processor_domain_restarts",
            "Domain stage runs that ended with an error and were restarted after a backoff.",
            registry=r,
        )
        self.attribute_values_unfit = Counter(
            "processor_attribute_values_unfit",
            "IO values left out of the decoded attributes because they do not fit their"
            " mapping (out of the width's range, wrong length, not 0/1, no label), by the"
            " mapping's type and the reason.",
            ["type", "reason"],
            registry=r,
        )
        self.domain_window_duration = Histogram(
            "processor_domain_window_duration_seconds",
            "Time to recompute one device window (read, compute, write, commit).",
            buckets=_WRITE_BUCKETS,
            registry=r,
        )
        self.last_commit = Gauge(
            "processor_last_commit_timestamp_seconds",
            "Unix time of the last committed batch.",
            registry=r,
        )
        job = ["job_id", "proc", "hypertable"]
        self.timescale_job_last_run_ok = Gauge(
            "processor_timescaledb_job_last_run_ok",
            "TimescaleDB jobs on the processor's hypertables: 1 if the last run succeeded,"
            " 0 if it failed (absent until the first run).",
            job,
            registry=r,
        )
        self.timescale_job_failures = Gauge(
            "processor_timescaledb_job_failures",
            "TimescaleDB job runs that failed, as job_stats counts them (since the job was made).",
            job,
            registry=r,
        )
        self.timescale_job_runs = Gauge(
            "processor_timescaledb_job_runs",
            "TimescaleDB job runs, as job_stats counts them (since the job was made).",
            job,
            registry=r,
        )
        self.timescale_job_success_age = Gauge(
            "processor_timescaledb_job_last_success_age_seconds",
            "Seconds since the job's last successful run (absent until it first succeeds).",
            job,
            registry=r,
        )
        self.timescale_jobs_sampled = Gauge(
            "processor_timescaledb_jobs_sample_timestamp_seconds",
            "Unix time the TimescaleDB job statistics were last read.",
            registry=r,
        )
        # -- the outbox dispatcher (processor dispatch) ------------------------------
        self.outbox_undelivered = Gauge(
            "processor_outbox_undelivered",
            "Outbox events not yet delivered to Directus (at most one per changed row).",
            registry=r,
        )
        self.outbox_oldest_age = Gauge(
            "processor_outbox_oldest_undelivered_age_seconds",
            "Age of the oldest undelivered outbox event (0 when none).",
            registry=r,
        )
        self.dispatch_events = Counter(
            "processor_dispatch_events",
            "Outbox events handled: delivered, coalesced into a later state of their row,"
            " or already in Directus (a retried delivery).",
            ["result"],
            registry=r,
        )
        self.dispatch_failures = Counter(
            "processor_dispatch_failures",
            "Failed delivery attempts (each is retried), by reason.",
            ["reason"],
            registry=r,
        )
        self.dispatch_latency = Histogram(
            "processor_dispatch_latency_seconds",
            "Outbox commit to Directus acknowledging the event.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.dispatch_leader = Gauge(
            "processor_dispatch_leader",
            "1 while this process is the one delivering the outbox (others stand by).",
            registry=r,
        )
        self.outbox_pruned = Counter(
            "processor_outbox_pruned",
            "Delivered outbox events deleted after PROCESSOR_OUTBOX_RETENTION_S.",
            registry=r,
        )
