-- Outbox: every domain change writes an event here in the same transaction; a dispatcher
-- delivers them to Directus (`processor_events`) over REST. Keyed by a deterministic
-- event_key, so a replay that changes nothing adds nothing.
CREATE TABLE IF NOT EXISTS telemetry.outbox (
    id           bigserial   PRIMARY KEY,
    event_key    text        NOT NULL UNIQUE,
    kind         text        NOT NULL,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_undelivered_idx
    ON telemetry.outbox (id) WHERE delivered_at IS NULL;

-- Decoded IO attributes per position, derived from positions.io through the Directus
-- io_mappings; rebuilt by backfill without touching positions.
CREATE TABLE IF NOT EXISTS telemetry.position_attributes (
    device_id       text        NOT NULL,
    ts              timestamptz NOT NULL,
    attributes      jsonb       NOT NULL,
    mapping_version text        NOT NULL,
    PRIMARY KEY (device_id, ts)
);
