-- TimescaleDB only: positions become a hypertable on ts, compressed by device.
-- :chunk_interval comes from PROCESSOR_TIMESCALE_CHUNK_INTERVAL.
SELECT create_hypertable(
    'telemetry.positions', 'ts',
    chunk_time_interval => CAST(:chunk_interval AS interval),
    if_not_exists => TRUE,
    migrate_data => TRUE
);

ALTER TABLE telemetry.positions SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id',
    timescaledb.compress_orderby = 'ts DESC'
);
