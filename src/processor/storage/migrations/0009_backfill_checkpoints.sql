-- `processor backfill attributes` (issue 17): how far each backfill has got. A run commits
-- its checkpoint in the same transaction as the rows it wrote, so a run killed at any
-- point (kill -9 included) resumes exactly after the last committed batch; the rows are
-- idempotent upserts either way. One row per job: the kind and its scope (model, devices,
-- time range) make the key, so running the same command again resumes it.
CREATE TABLE IF NOT EXISTS telemetry.backfill_checkpoints (
    job             text        PRIMARY KEY,
    kind            text        NOT NULL,
    scope           jsonb       NOT NULL,
    -- The mappings in scope when the run started: a run interrupted and then resumed
    -- after a mapping edit starts over (what it wrote before used the old mapping).
    mapping_version text        NOT NULL,
    -- The last (unit, device, ts) written: units are the hypertable's chunks in time
    -- order (one unit on plain PostgreSQL), devices in order within a unit, ts within.
    unit_ms         bigint,
    device_id       text,
    ts_ms           bigint,
    scanned         bigint      NOT NULL DEFAULT 0,
    written         bigint      NOT NULL DEFAULT 0,
    deleted         bigint      NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
