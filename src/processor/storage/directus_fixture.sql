-- The Directus collections as plain SQL, for tests and development machines without Directus.
--
-- NOT A MIGRATION. Schema `public` belongs to Directus (DESIGN rule 2): in production its
-- tables are created by `npx directus schema apply directus/snapshot.yaml`, and the processor
-- never runs this file or any other DDL there. It lives outside `migrations/` so the migration
-- runner never picks it up. Tests apply it to a database of their own.
--
-- It creates the same tables, columns, types, nullability, defaults, unique constraints and
-- foreign keys (with Directus's constraint names) as Directus 10.13.4 does when it applies the
-- snapshot; tests/integration/test_directus_schema.py compares the two. Change the snapshot
-- first (docs in directus/README.md), then this file. Decisions: docs/adr/.
--
-- Columns are in the order a fresh `schema apply` creates them: the snapshot's order of the
-- fields (a collection's top-level fields, then those inside the Studio's form groups). A
-- database upgraded by `schema apply` has its new columns at the end instead; nothing reads
-- columns by position.

-- Configuration (edited by organisers in Directus; read by the processor).

CREATE TABLE public.events (
    id serial CONSTRAINT events_pkey PRIMARY KEY,
    name varchar(255) NOT NULL,
    starts_at timestamptz NOT NULL,
    ends_at timestamptz NOT NULL,
    timezone varchar(64) NOT NULL DEFAULT 'UTC',
    status varchar(32) NOT NULL DEFAULT 'draft',
    public boolean NOT NULL DEFAULT false,       -- published to the public role
    rules json                                   -- alert thresholds, penalty rules (ADR 0010)
);

CREATE TABLE public.devices (
    id serial CONSTRAINT devices_pkey PRIMARY KEY,
    imei varchar(32) NOT NULL CONSTRAINT devices_imei_unique UNIQUE,
    model varchar(64) NOT NULL,
    label varchar(255)
);

CREATE TABLE public.entries (
    id serial CONSTRAINT entries_pkey PRIMARY KEY,
    event integer NOT NULL
        CONSTRAINT entries_event_foreign REFERENCES public.events (id),
    device integer
        CONSTRAINT entries_device_foreign REFERENCES public.devices (id) ON DELETE SET NULL,
    number integer NOT NULL,
    crew_name varchar(255) NOT NULL,
    class varchar(64),
    status varchar(32) NOT NULL DEFAULT 'confirmed'
);

CREATE TABLE public.stages (
    id serial CONSTRAINT stages_pkey PRIMARY KEY,
    event integer NOT NULL
        CONSTRAINT stages_event_foreign REFERENCES public.events (id),
    name varchar(255) NOT NULL,
    sequence integer NOT NULL,
    opens_at timestamptz NOT NULL,
    closes_at timestamptz NOT NULL,
    status varchar(32) NOT NULL DEFAULT 'scheduled',
    max_time_s integer,
    route json                                   -- GeoJSON LineString [lon, lat]
);

CREATE TABLE public.geofences (
    id serial CONSTRAINT geofences_pkey PRIMARY KEY,
    event integer NOT NULL
        CONSTRAINT geofences_event_foreign REFERENCES public.events (id),
    stage integer
        CONSTRAINT geofences_stage_foreign REFERENCES public.stages (id),
    kind varchar(32) NOT NULL,
    name varchar(255) NOT NULL,
    geometry json NOT NULL,                      -- GeoJSON LineString / Point / Polygon
    direction varchar(16),
    radius_m real,
    speed_limit_kmh real,
    sequence integer NOT NULL DEFAULT 0,
    waypoint_type varchar(16)
);

CREATE TABLE public.io_mappings (
    id serial CONSTRAINT io_mappings_pkey PRIMARY KEY,
    model varchar(64) NOT NULL DEFAULT '*',
    io_id integer NOT NULL,
    name varchar(64) NOT NULL,
    type varchar(16) NOT NULL,                   -- ADR 0013: unsigned, signed, boolean, enum, hex, ascii
    multiplier numeric(18, 9),                   -- scale (unsigned/signed): value × multiplier + offset
    unit varchar(16),
    width integer,                               -- the element's size in bytes: 1, 2, 4, 8
    offset_value numeric(18, 9),
    decimals integer,
    labels json                                  -- enum: {"0": "label", …}
);

-- Processor outputs: upserted on `key`; rows with source = 'manual' are never overwritten.

CREATE TABLE public.timing_records (
    id serial CONSTRAINT timing_records_pkey PRIMARY KEY,
    stage integer NOT NULL
        CONSTRAINT timing_records_stage_foreign REFERENCES public.stages (id) ON DELETE CASCADE,
    entry integer NOT NULL
        CONSTRAINT timing_records_entry_foreign REFERENCES public.entries (id) ON DELETE CASCADE,
    geofence integer NOT NULL
        CONSTRAINT timing_records_geofence_foreign REFERENCES public.geofences (id)
        ON DELETE CASCADE,
    kind varchar(16) NOT NULL,
    ordinal integer NOT NULL DEFAULT 0,
    crossed_at timestamptz NOT NULL,
    source varchar(16) NOT NULL DEFAULT 'manual',
    status varchar(16) NOT NULL DEFAULT 'valid',
    note text,
    key varchar(255) CONSTRAINT timing_records_key_unique UNIQUE,
    fix_before_at timestamptz,
    fix_after_at timestamptz,
    details json,
    updated_at timestamptz
);

CREATE TABLE public.stage_results (
    id serial CONSTRAINT stage_results_pkey PRIMARY KEY,
    stage integer NOT NULL
        CONSTRAINT stage_results_stage_foreign REFERENCES public.stages (id) ON DELETE CASCADE,
    entry integer NOT NULL
        CONSTRAINT stage_results_entry_foreign REFERENCES public.entries (id) ON DELETE CASCADE,
    start_at timestamptz,
    finish_at timestamptz,
    elapsed_ms bigint,
    penalty_ms bigint NOT NULL DEFAULT 0,
    total_ms bigint,
    status varchar(16) NOT NULL DEFAULT 'running',
    rank integer,
    class_rank integer,
    source varchar(16) NOT NULL DEFAULT 'manual',
    note text,
    gap_leader_ms bigint,
    gap_ahead_ms bigint,
    key varchar(255) CONSTRAINT stage_results_key_unique UNIQUE,
    splits json,
    updated_at timestamptz
);

CREATE TABLE public.alerts (
    id serial CONSTRAINT alerts_pkey PRIMARY KEY,
    event integer NOT NULL
        CONSTRAINT alerts_event_foreign REFERENCES public.events (id) ON DELETE CASCADE,
    entry integer
        CONSTRAINT alerts_entry_foreign REFERENCES public.entries (id) ON DELETE CASCADE,
    stage integer
        CONSTRAINT alerts_stage_foreign REFERENCES public.stages (id) ON DELETE CASCADE,
    kind varchar(32) NOT NULL,
    severity varchar(16) NOT NULL DEFAULT 'warning',
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    status varchar(16) NOT NULL DEFAULT 'open',
    source varchar(16) NOT NULL DEFAULT 'manual',
    note text,                                   -- an official's acknowledgement
    key varchar(255) CONSTRAINT alerts_key_unique UNIQUE,
    details json,
    updated_at timestamptz
);

CREATE TABLE public.penalties (
    id serial CONSTRAINT penalties_pkey PRIMARY KEY,
    stage integer NOT NULL
        CONSTRAINT penalties_stage_foreign REFERENCES public.stages (id) ON DELETE CASCADE,
    entry integer NOT NULL
        CONSTRAINT penalties_entry_foreign REFERENCES public.entries (id) ON DELETE CASCADE,
    kind varchar(32) NOT NULL,
    amount_ms bigint NOT NULL,
    reason text,
    status varchar(16) NOT NULL DEFAULT 'valid',
    source varchar(16) NOT NULL DEFAULT 'manual',
    note text,                                   -- why an official added, waived or changed it
    key varchar(255) CONSTRAINT penalties_key_unique UNIQUE,
    updated_at timestamptz,
    details json                                 -- evidence: the numbers it was computed from
);

-- Integration: the outbox dispatcher creates one item per change over REST (so Flows and
-- WebSocket subscribers see it); event_key makes a repeated delivery a unique violation.

CREATE TABLE public.processor_events (
    id serial CONSTRAINT processor_events_pkey PRIMARY KEY,
    event_key varchar(255) NOT NULL CONSTRAINT processor_events_event_key_unique UNIQUE,
    kind varchar(64) NOT NULL,
    payload json NOT NULL,
    created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
);
