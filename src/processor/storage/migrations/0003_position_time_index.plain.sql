-- Plain PostgreSQL only (a hypertable has this index already): time-range scans across devices.
CREATE INDEX IF NOT EXISTS positions_ts_idx ON telemetry.positions (ts DESC);
