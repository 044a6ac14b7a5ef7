-- Citus only: positions and their decoded attributes distributed by device_id and
-- co-located, so a device's rows of both live in the same shard on the same node and
-- every per-device query goes to one shard. :citus_shard_count comes from
-- PROCESSOR_CITUS_SHARD_COUNT (docs/scaling.md says how it was chosen). Every other
-- telemetry table stays a local table on the coordinator (storage/citus.py says why).
SELECT create_distributed_table(
    'telemetry.positions', 'device_id',
    shard_count => :citus_shard_count
);

SELECT create_distributed_table(
    'telemetry.position_attributes', 'device_id',
    colocate_with => 'telemetry.positions'
);
