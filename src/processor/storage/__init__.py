"""PostgreSQL: connection pool, migrations of the `telemetry` schema, the positions writer."""
