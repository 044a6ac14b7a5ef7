"""The declared roles keep ADR 0011's promises (no services)."""

from __future__ import annotations

import uuid

import pytest

from processor.directus.access import (
    CONFIGURATION,
    DISPATCHER,
    DISPATCHER_USER,
    EVENTS,
    OUTPUTS,
    PROJECT_COLLECTIONS,
    PUBLIC,
    RACE_CONTROL,
    ROLES,
    TIMEKEEPER,
    Fields,
    Permission,
    Role,
    stable_id,
)

PERSONAL_OR_INTERNAL = {"device", "imei", "key", "source", "note", "route", "rules", "details"}


def test_ids_are_derived_and_pinned() -> None:
    """Renaming a key changes an id, and apply would leave the old role behind: pinned."""
    assert RACE_CONTROL.id == stable_id("role:race_control")
    assert RACE_CONTROL.id == str(
        uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "urn:processor:directus"), "role:race_control")
    )
    ids = [r.id for r in ROLES if r.id] + [DISPATCHER_USER.id]
    assert len(set(ids)) == len(ids) == 4
    assert PUBLIC.id is None


def test_no_role_deletes_configuration() -> None:
    for role in ROLES:
        for p in role.permissions:
            assert not (p.action == "delete" and p.collection in CONFIGURATION), (role.key, p)


def test_race_control_deletes_only_its_manual_rows() -> None:
    deletes = [p for p in RACE_CONTROL.permissions if p.action == "delete"]
    assert {p.collection for p in deletes} == set(OUTPUTS)
    assert all(p.filter == {"source": {"_eq": "manual"}} for p in deletes)


def test_race_control_reads_everything_and_edits_outputs_with_source() -> None:
    reads = {p.collection for p in RACE_CONTROL.permissions if p.action == "read"}
    assert set(PROJECT_COLLECTIONS) <= reads
    for p in RACE_CONTROL.permissions:
        if p.action == "update" and p.collection in OUTPUTS:
            # The officials'-intent Flow adds `source` to the payload Directus then checks.
            assert p.fields.all_but is not None
            assert "source" not in p.fields.all_but
            assert "key" in p.fields.all_but
        if p.action == "create":
            assert p.presets == {"source": "manual"}
            assert p.fields.all_but is not None
            assert {"key", "source"} <= set(p.fields.all_but)


def test_the_timekeeper_writes_times_and_penalties_only() -> None:
    writes = {(p.collection, p.action) for p in TIMEKEEPER.permissions if p.action != "read"}
    assert {w for w in writes if not w[0].startswith("directus_")} == {
        ("timing_records", "create"),
        ("penalties", "create"),
        ("penalties", "update"),
    }
    reads = {p.collection for p in TIMEKEEPER.permissions if p.action == "read"}
    assert "devices" not in reads


def test_the_public_reads_named_fields_of_public_events_only() -> None:
    assert {p.action for p in PUBLIC.permissions} == {"read"}
    assert {p.collection for p in PUBLIC.permissions} == {
        "events",
        "stages",
        "entries",
        "stage_results",
    }
    for p in PUBLIC.permissions:
        assert p.fields.only is not None, p.collection
        assert not PERSONAL_OR_INTERNAL & set(p.fields.only), p.collection
        assert "public" in repr(p.filter), p.collection
    assert not PUBLIC.app_access


def test_the_public_manages_only_the_project_collections() -> None:
    assert PUBLIC.manages("stage_results")
    assert not PUBLIC.manages("directus_files")
    assert RACE_CONTROL.manages("directus_files")


def test_the_dispatcher_creates_processor_events_only() -> None:
    assert not DISPATCHER.app_access
    assert {(p.collection, p.action) for p in DISPATCHER.permissions} == {
        (EVENTS, "create"),
        (EVENTS, "read"),
    }
    read = next(p for p in DISPATCHER.permissions if p.action == "read")
    assert read.fields.only is not None
    assert "payload" not in read.fields.only
    assert DISPATCHER_USER.role is DISPATCHER


def test_one_permission_per_collection_and_action() -> None:
    with pytest.raises(ValueError, match="two permissions"):
        Role("x", "X", "i", "d", True, (Permission("events", "read"), Permission("events", "read")))


def test_fields_are_one_kind() -> None:
    with pytest.raises(ValueError, match="not both"):
        Fields(only=("a",), all_but=("b",))
