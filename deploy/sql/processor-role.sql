-- Least-privilege PostgreSQL role for the processor.
--
-- Run as an administrator (a superuser, or a role with CREATEROLE that owns the database),
-- connected to the processor's database:
--
--   psql -v ON_ERROR_STOP=1 -v processor_password="$POSTGRES_PROCESSOR_PASSWORD" \
--        -h <host> -U postgres -d processor -f deploy/sql/processor-role.sql
--
-- or leave out `-v processor_password=...` and export POSTGRES_PROCESSOR_PASSWORD: psql 15+
-- reads it with \getenv, which keeps the password out of the process list. No password is
-- written here; the script refuses to run without one.
--
-- What the role gets:
--   * LOGIN, nothing else at the role level (no superuser, createdb, createrole,
--     replication, bypassrls).
--   * CONNECT and TEMPORARY on this database (the `copy` write method uses a session
--     temp table).
--   * USAGE and CREATE on schema telemetry: the processor migrates its own schema
--     (`processor migrate` / `processor run`) and owns the tables it creates there. The
--     schema itself belongs to the administrator; the role owns neither the schema nor
--     the database.
--   * On schema public: USAGE only, plus SELECT, INSERT, UPDATE, DELETE on the Directus
--     tables the domain uses (events, devices, entries, stages, geofences, io_mappings,
--     timing_records, stage_results, alerts, penalties) and their id sequences. Tables
--     that do not exist yet are skipped with a notice: RE-RUN THIS SCRIPT after Directus
--     has created them.
--
-- TimescaleDB: the extension is created here when the server has it (a non-superuser
-- processor cannot create it, and would fall back to plain PostgreSQL).
--
-- Safe to re-run: it converges to the state above (and resets the password).

\set ON_ERROR_STOP on
\set QUIET on

-- Keep the statement carrying the password out of the server log (superusers only may
-- change these; for other administrators make sure log_statement is not 'all' or 'ddl').
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        PERFORM set_config('log_statement', 'none', false);
        PERFORM set_config('log_min_duration_statement', '-1', false);
        PERFORM set_config('log_min_error_statement', 'panic', false);
    END IF;
END
$$;

\if :{?processor_password}
\else
  \getenv processor_password POSTGRES_PROCESSOR_PASSWORD
\endif
\if :{?processor_password}
\else
  \echo 'processor-role.sql: no password: pass -v processor_password=... or export POSTGRES_PROCESSOR_PASSWORD'
  DO $$ BEGIN RAISE EXCEPTION 'processor_password is not set'; END $$;
\endif
SELECT length(:'processor_password') < 16 AS processor_password_too_short \gset
\if :processor_password_too_short
  \echo 'processor-role.sql: the password must have at least 16 characters'
  DO $$ BEGIN RAISE EXCEPTION 'processor_password is too short'; END $$;
\endif

BEGIN;

-- The role ----------------------------------------------------------------------------------
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'processor') AS processor_role_missing \gset
\if :processor_role_missing
CREATE ROLE processor;
\endif
ALTER ROLE processor WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE processor WITH PASSWORD :'processor_password';
COMMENT ON ROLE processor IS 'GPS processor: writes telemetry.*, reads/writes the Directus domain tables';

-- The database ------------------------------------------------------------------------------
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO processor', current_database()) \gexec

-- TimescaleDB, when this server has it ------------------------------------------------------
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXCEPTION WHEN others THEN
            RAISE WARNING 'timescaledb is installed but could not be created (%): '
                'the processor will use plain PostgreSQL', SQLERRM;
        END;
    END IF;
END
$$;

-- Schema telemetry: the processor's own -----------------------------------------------------
CREATE SCHEMA IF NOT EXISTS telemetry;
GRANT USAGE, CREATE ON SCHEMA telemetry TO processor;

-- Tables of telemetry created by another role (e.g. migrated once as postgres) go to the
-- processor: migrations (ALTER, hypertable, compression and retention policies) need the
-- table owner.
DO $$
DECLARE
    rel regclass;
BEGIN
    FOR rel IN
        SELECT c.oid::regclass
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'telemetry'
          AND c.relkind IN ('r', 'p')
          AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = 'processor')
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO processor', rel);
        RAISE NOTICE 'table % now belongs to processor', rel;
    END LOOP;
END
$$;

-- Schema public: the Directus tables only ---------------------------------------------------
REVOKE CREATE ON SCHEMA public FROM processor;
GRANT USAGE ON SCHEMA public TO processor;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM processor;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM processor;

DO $$
DECLARE
    wanted constant text[] := ARRAY[
        'events', 'devices', 'entries', 'stages', 'geofences', 'io_mappings',
        'timing_records', 'stage_results', 'alerts', 'penalties'
    ];
    name text;
    tbl regclass;
    seq regclass;
    missing text[] := '{}';
BEGIN
    FOREACH name IN ARRAY wanted LOOP
        tbl := to_regclass(format('public.%I', name));
        IF tbl IS NULL THEN
            missing := missing || name;
            CONTINUE;
        END IF;
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %s TO processor', tbl);
        -- Sequences behind serial and identity ids (INSERT calls nextval).
        FOR seq IN
            SELECT d.objid::regclass
            FROM pg_depend d
            JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
            WHERE d.classid = 'pg_class'::regclass
              AND d.refclassid = 'pg_class'::regclass
              AND d.refobjid = tbl
              AND d.deptype IN ('a', 'i')
        LOOP
            EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO processor', seq);
        END LOOP;
    END LOOP;
    IF cardinality(missing) > 0 THEN
        RAISE NOTICE 'Directus tables not there yet, not granted: %. Re-run this script '
            'after Directus has created them.', array_to_string(missing, ', ');
    END IF;
END
$$;

COMMIT;

\unset processor_password
\echo 'processor-role.sql: role processor is ready'
