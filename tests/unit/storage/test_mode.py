"""Which mode a database gets: the pure decision behind `migrate` (no server needed)."""

from __future__ import annotations

import pytest

from processor.storage.citus import Cluster
from processor.storage.migrate import MigrationError, decide_mode, load_migrations, split_statements
from processor.storage.timescale import Extension

NONE = Extension(available=False, installed=False, preloaded=False, version=None)
AVAILABLE = Extension(available=True, installed=False, preloaded=True, version=None)
NOT_PRELOADED = Extension(available=True, installed=False, preloaded=False, version=None)
INSTALLED = Extension(available=True, installed=True, preloaded=True, version="2.28.3")
INSTALLED_NOT_PRELOADED = Extension(
    available=True, installed=True, preloaded=False, version="2.28.3"
)


def test_auto_uses_timescale_when_the_server_has_it() -> None:
    assert decide_mode("auto", None, INSTALLED).mode == "timescale"
    created = decide_mode("auto", None, AVAILABLE)
    assert (created.mode, created.create_extension) == ("timescale", True)


def test_auto_falls_back_to_plain_without_it_and_says_why_when_not_preloaded() -> None:
    assert decide_mode("auto", None, NONE).mode == "plain"
    fallback = decide_mode("auto", None, NOT_PRELOADED)
    assert (fallback.mode, fallback.create_extension) == ("plain", False)
    assert fallback.warning == "timescaledb_not_preloaded"


def test_timescale_required_refuses_in_one_line() -> None:
    for ext, reason in (
        (NONE, "no timescaledb extension"),
        (NOT_PRELOADED, "not preloaded"),
    ):
        with pytest.raises(MigrationError, match=reason) as caught:
            decide_mode("timescale", None, ext)
        assert "\n" not in str(caught.value)


def test_plain_wanted_is_plain_even_where_timescale_is_available() -> None:
    assert decide_mode("plain", None, INSTALLED).mode == "plain"


def test_a_migrated_database_keeps_its_mode() -> None:
    assert decide_mode("auto", "plain", INSTALLED).mode == "plain"
    assert decide_mode("auto", "timescale", INSTALLED).mode == "timescale"
    with pytest.raises(MigrationError, match="migrated in plain mode"):
        decide_mode("timescale", "plain", INSTALLED)
    with pytest.raises(MigrationError, match="migrated in timescale mode"):
        decide_mode("plain", "timescale", INSTALLED)


def test_a_timescale_database_on_a_server_without_the_loader_is_refused() -> None:
    with pytest.raises(MigrationError, match="not preloaded"):
        decide_mode("auto", "timescale", INSTALLED_NOT_PRELOADED)
    with pytest.raises(MigrationError, match="extension is gone"):
        decide_mode("auto", "timescale", NONE)


def test_statements_split_on_line_ends_outside_comments() -> None:
    sql = "-- a comment; not a statement\nSELECT 1;\nSELECT\n  2; -- trailing\n\n-- end\n"
    assert split_statements(sql) == ["SELECT 1;", "SELECT\n  2; -- trailing"]
    assert split_statements("SELECT 3") == ["SELECT 3"]


def test_every_shipped_migration_splits_into_whole_statements() -> None:
    for migration in load_migrations():
        statements = split_statements(migration.sql)
        assert statements, migration.name
        rejoined = "".join(s.split("--", 1)[0] for s in "\n".join(statements).splitlines())
        original = "".join(s.split("--", 1)[0] for s in migration.sql.splitlines())
        assert rejoined.replace(" ", "") == original.replace(" ", ""), migration.name
        for statement in statements:  # comment lines may sit inside a statement
            code = [ln.split("--", 1)[0].rstrip() for ln in statement.splitlines()]
            assert [c for c in code if c][-1].endswith(";"), migration.name


def test_installed_but_not_preloaded_is_refused_whatever_the_ledger_says() -> None:
    for ledger in (None, "plain", "timescale"):
        with pytest.raises(MigrationError, match="but not preloaded: add timescaledb"):
            decide_mode("auto", ledger, INSTALLED_NOT_PRELOADED)


CITUS = Cluster(preloaded=True, installed=True, coordinator=True, workers=2, version="13.2-1")
CITUS_NOT_IN_DB = Cluster(
    preloaded=True, installed=False, coordinator=False, workers=0, version=None
)
CITUS_NO_WORKERS = Cluster(
    preloaded=True, installed=True, coordinator=True, workers=0, version="13.2-1"
)
CITUS_WORKER_NODE = Cluster(
    preloaded=True, installed=True, coordinator=False, workers=2, version="13.2-1"
)


def test_auto_uses_citus_where_the_extension_is_created_and_workers_are_active() -> None:
    assert decide_mode("auto", None, NONE, CITUS).mode == "citus"
    assert decide_mode("citus", None, NONE, CITUS).mode == "citus"
    # TimescaleDB merely available beside it is not created.
    decision = decide_mode("auto", None, AVAILABLE, CITUS)
    assert (decision.mode, decision.create_extension) == ("citus", False)


def test_citus_on_the_server_but_not_in_the_database_is_plain_and_says_why() -> None:
    decision = decide_mode("auto", None, AVAILABLE, CITUS_NOT_IN_DB)
    assert (decision.mode, decision.create_extension) == ("plain", False)
    assert decision.warning == "citus_not_in_database"
    assert "every worker" in decision.hint


def test_an_incomplete_cluster_is_refused_not_fixed_in_plain_mode() -> None:
    for cluster, reason in (
        (CITUS_NO_WORKERS, "no active Citus worker"),
        (CITUS_WORKER_NODE, "not the coordinator"),
        (CITUS_NOT_IN_DB, "not created in this database"),
    ):
        with pytest.raises(MigrationError, match=reason) as caught:
            decide_mode("citus", None, NONE, cluster)
        assert "\n" not in str(caught.value)
    with pytest.raises(MigrationError, match="PROCESSOR_DATABASE_MODE=plain"):
        decide_mode("auto", None, NONE, CITUS_NO_WORKERS)
    assert decide_mode("plain", None, NONE, CITUS_NO_WORKERS).mode == "plain"


def test_citus_is_never_combined_with_timescale() -> None:
    with pytest.raises(MigrationError, match="both timescaledb and citus"):
        decide_mode("auto", None, INSTALLED, CITUS)
    with pytest.raises(MigrationError, match="does not combine them"):
        decide_mode("timescale", None, AVAILABLE, CITUS)


def test_a_citus_database_keeps_its_mode_and_needs_its_cluster() -> None:
    assert decide_mode("auto", "citus", NONE, CITUS).mode == "citus"
    assert decide_mode("auto", "plain", NONE, CITUS).mode == "plain"
    with pytest.raises(MigrationError, match="migrated in citus mode but no active"):
        decide_mode("auto", "citus", NONE, CITUS_NO_WORKERS)
    with pytest.raises(MigrationError, match="migrated in plain mode"):
        decide_mode("citus", "plain", NONE, CITUS)


def test_plain_files_run_on_citus_and_citus_files_only_there() -> None:
    by_variant = {m.variant: m for m in load_migrations() if m.variant is not None}
    assert by_variant["plain"].runs_in("citus")
    assert by_variant["plain"].runs_in("plain")
    assert not by_variant["plain"].runs_in("timescale")
    assert by_variant["citus"].runs_in("citus")
    assert not by_variant["citus"].runs_in("plain")
    assert not by_variant["citus"].runs_in("timescale")
    assert not by_variant["timescale"].runs_in("citus")
