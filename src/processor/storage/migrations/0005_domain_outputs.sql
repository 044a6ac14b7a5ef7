-- The processor's own record of every automatic output it published to Directus
-- (timing records, penalties, stage results, alerts), keyed like the published row.
-- Schema `public` belongs to Directus and has no index the domain stage can rely on
-- (ADR 0010); this table is what the stage reads to find its previous outputs of an
-- entry, a stage or a time range, and the published rows are written from it.
CREATE TABLE IF NOT EXISTS telemetry.domain_outputs (
    collection text     NOT NULL,
    key        text     NOT NULL,
    event      integer  NOT NULL,
    stage      integer,
    entry      integer,
    at_ms      bigint   NOT NULL,
    data       jsonb    NOT NULL,
    PRIMARY KEY (collection, key)
);
CREATE INDEX IF NOT EXISTS domain_outputs_entry_idx
    ON telemetry.domain_outputs (collection, entry, at_ms);
CREATE INDEX IF NOT EXISTS domain_outputs_stage_idx
    ON telemetry.domain_outputs (collection, stage, entry);
