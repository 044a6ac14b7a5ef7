-- Outbox v2 (issue 14): an event is one change of one published row, its version is its
-- id. A row's changes are made under that row's lock (telemetry.domain_outputs, then the
-- published row), and its event is inserted after the lock is taken, so for any one row the
-- ids follow commit order: A -> B -> A is three versions, never one deduplicated state.
-- The idempotency key sent to Directus is `collection:row_key:id` (the dispatcher makes it);
-- `event_key` stays only for rows written before this migration.
ALTER TABLE telemetry.outbox ALTER COLUMN event_key DROP NOT NULL;
ALTER TABLE telemetry.outbox ADD COLUMN IF NOT EXISTS collection text;
ALTER TABLE telemetry.outbox ADD COLUMN IF NOT EXISTS row_key text;
ALTER TABLE telemetry.outbox ADD COLUMN IF NOT EXISTS change text;
UPDATE telemetry.outbox
   SET collection = payload->>'collection', row_key = payload->>'key',
       change = payload->>'change'
 WHERE collection IS NULL;
-- A new change of a row replaces that row's undelivered one (coalescing at write): while
-- Directus is down the outbox holds at most one event per changed row.
CREATE INDEX IF NOT EXISTS outbox_undelivered_row_idx
    ON telemetry.outbox (collection, row_key) WHERE delivered_at IS NULL;
-- Retention deletes delivered events by age.
CREATE INDEX IF NOT EXISTS outbox_delivered_idx
    ON telemetry.outbox (delivered_at) WHERE delivered_at IS NOT NULL;
