-- TimescaleDB only: decoded attributes are keyed and grow like positions, so they follow
-- positions: a hypertable on ts with the same chunks, compression and retention.
-- :chunk_interval comes from PROCESSOR_TIMESCALE_CHUNK_INTERVAL.
SELECT create_hypertable(
    'telemetry.position_attributes', 'ts',
    chunk_time_interval => CAST(:chunk_interval AS interval),
    if_not_exists => TRUE,
    migrate_data => TRUE
);

ALTER TABLE telemetry.position_attributes SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id',
    timescaledb.compress_orderby = 'ts DESC'
);

-- The policies the processor created itself (by job id): only these follow the settings;
-- a policy added by hand is reported and left alone (storage/timescale.py).
CREATE TABLE IF NOT EXISTS telemetry.timescale_policies (
    hypertable text    NOT NULL,
    proc       text    NOT NULL,
    job_id     integer NOT NULL,
    PRIMARY KEY (hypertable, proc)
);
