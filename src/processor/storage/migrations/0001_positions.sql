-- The positions table: one row per AVL record, keyed by (device_id, ts) (DESIGN rule 3).
CREATE TABLE IF NOT EXISTS telemetry.positions (
    device_id   text             NOT NULL,
    ts          timestamptz      NOT NULL,
    received_at timestamptz      NOT NULL,
    latitude    double precision NOT NULL,
    longitude   double precision NOT NULL,
    altitude    real,
    heading     real,
    speed       real,
    satellites  smallint,
    priority    smallint         NOT NULL DEFAULT 0,
    event_io_id integer,
    codec       text,
    fix_valid   boolean          NOT NULL,
    io          jsonb            NOT NULL DEFAULT '{}'::jsonb,
    stream_id   text             NOT NULL,
    PRIMARY KEY (device_id, ts)
);

COMMENT ON TABLE telemetry.positions IS
    'One row per AVL record (stream contract v1). Owned and migrated by the processor.';
COMMENT ON COLUMN telemetry.positions.ts IS 'GPS time of the record (UTC, ms precision).';
COMMENT ON COLUMN telemetry.positions.io IS
    'Raw IO elements: 64-bit values as exact JSON numbers, byte strings as lowercase hex.';
COMMENT ON COLUMN telemetry.positions.stream_id IS 'Source Redis Stream entry ID, for tracing.';
