-- How far the domain stage has handled each device's track: the latest end of a window
-- it handled (domain_runner/progress.py). The in-order fast path assumes that nothing
-- after a window has been handled yet; notices can be handled out of order (two
-- instances, batches committed out of order by the core, retries), and this is how the
-- stage knows.
CREATE TABLE IF NOT EXISTS telemetry.domain_progress (
    device_id     text   PRIMARY KEY,
    handled_to_ms bigint NOT NULL
);
