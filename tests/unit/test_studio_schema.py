"""The Studio's metadata in directus/snapshot.yaml agrees with what the processor writes (no
services): folders, display templates, choices and colours, officials' `note` fields, the
processor's keys as the field notes describe them, time zones, one-to-many lists, presets.

ADR 0012. The browser test (tests/integration/test_studio.py) shows the same in a real Studio.
"""

from __future__ import annotations

import functools
import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from processor.directus.presets import load_presets
from processor.domain.alerts import KINDS, AlertSpan, Severity
from processor.domain.config import GeofenceKind
from processor.domain.results import ResultStatus
from processor.domain.timing import Crossing, FixRef
from processor.domain_runner.alerts import alert_output
from processor.domain_runner.config_source import EntryRef
from processor.domain_runner.race import result_key
from processor.domain_runner.tables import ALERTS, PENALTIES, STAGE_RESULTS, TIMING_RECORDS
from processor.domain_runner.timing_records import record_key

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "directus" / "snapshot.yaml"
EXTENSION = ROOT / "directus" / "extensions" / "processor-studio"
OUTPUTS = ("timing_records", "stage_results", "penalties", "alerts")
FOLDERS = {
    "race": ("Race", ["events", "stages", "entries"]),
    "timing_and_results": (
        "Timing & results",
        ["stage_results", "timing_records", "penalties", "alerts"],
    ),
    "configuration": ("Configuration", ["geofences", "devices", "io_mappings"]),
    "system": ("System", ["processor_events"]),
}
# What the processor writes (the tests below tie each to the code where they can).
TIMING_KINDS = {"start_line", "split_line", "finish_line", "waypoint", "zone_entry", "zone_exit"}
PENALTY_KINDS_WRITTEN = {"speeding", "missed_waypoint"}  # domain_runner/race.py
BUILT_IN_INTERFACES = {
    "input",
    "input-code",
    "input-multiline",
    "select-dropdown",
    "select-dropdown-m2o",
    "list-o2m",
    "datetime",
    "boolean",
    "group-detail",
}
BUILT_IN_DISPLAYS = {"labels", "related-values", "datetime", "boolean", "formatted-value"}


@functools.cache
def _snapshot() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc: dict[str, Any] = yaml.load(SNAPSHOT.read_text(), Loader=loader)
    return doc


def _collections() -> dict[str, dict[str, Any]]:
    return {c["collection"]: c for c in _snapshot()["collections"]}


def _fields(collection: str) -> dict[str, dict[str, Any]]:
    return {f["field"]: f for f in _snapshot()["fields"] if f["collection"] == collection}


def _meta(collection: str, field: str) -> dict[str, Any]:
    meta: dict[str, Any] = _fields(collection)[field]["meta"]
    return meta


def _choices(collection: str, field: str) -> list[dict[str, Any]]:
    choices: list[dict[str, Any]] = _meta(collection, field)["display_options"]["choices"]
    return choices


def _values(collection: str, field: str) -> set[str]:
    return {c["value"] for c in _choices(collection, field)}


def test_collections_sit_in_folders() -> None:
    collections = _collections()
    for folder, (label, members) in FOLDERS.items():
        meta = collections[folder]["meta"]
        assert "schema" not in collections[folder] or not collections[folder]["schema"]
        assert meta["translations"][0]["translation"] == label
        grouped = sorted(
            (c for c in collections.values() if c["meta"]["group"] == folder),
            key=lambda c: c["meta"]["sort"],
        )
        assert [c["collection"] for c in grouped] == members
    tables = [c for c in collections.values() if c.get("schema")]
    assert all(c["meta"]["group"] in FOLDERS for c in tables)


@pytest.mark.parametrize("collection", OUTPUTS)
def test_outputs_are_titled_by_car_and_crew(collection: str) -> None:
    template = _collections()[collection]["meta"]["display_template"]
    assert template.startswith("#{{entry.number}} {{entry.crew_name}}"), template
    if collection != "alerts":
        assert "{{stage.name}}" in template, template
    # Each M2O names what it points at the same way.
    assert _meta(collection, "entry")["display_options"]["template"] == "#{{number}} {{crew_name}}"


def test_alert_kinds_are_the_ones_the_processor_writes() -> None:
    assert _values("alerts", "kind") == set(KINDS)
    assert "speeding" not in _values("alerts", "kind")
    assert _values("alerts", "severity") == set(typing.get_args(Severity))
    # Officials' statuses are the ones the processor keeps (tables.ALERTS' override).
    kept = set(re.findall(r"'(\w+)'", ALERTS.overrides["status"]))
    assert _values("alerts", "status") == {"open", "ended"} | kept


def test_other_choices_match_the_domain() -> None:
    assert _values("stage_results", "status") == set(typing.get_args(ResultStatus))
    assert _values("geofences", "kind") == set(typing.get_args(GeofenceKind))
    assert _values("timing_records", "kind") == TIMING_KINDS
    assert {"valid", "superseded"} <= _values("timing_records", "status")
    assert _values("penalties", "kind") >= PENALTY_KINDS_WRITTEN
    assert "max_time" not in _values("penalties", "kind")  # over max time is a DNF
    assert _values("penalties", "status") == {"valid", "cancelled"}
    for collection in OUTPUTS:
        assert _values(collection, "source") == {"auto", "manual"}


def test_every_choice_has_colours_and_the_dropdown_offers_the_same_values() -> None:
    for field in _snapshot()["fields"]:
        meta = field["meta"]
        if meta["display"] != "labels" or field["collection"] == "io_mappings":
            continue  # io_mappings' fields are the attributes' (ADR 0013)
        where = f"{field['collection']}.{field['field']}"
        choices = meta["display_options"]["choices"]
        assert choices, where
        for choice in choices:
            assert re.fullmatch(r"#[0-9A-F]{6}", choice["background"]), where
            assert re.fullmatch(r"#[0-9A-F]{6}", choice["foreground"]), where
        offered = [c["value"] for c in meta["options"]["choices"]]
        assert offered == [c["value"] for c in choices], where
    severity = {c["value"]: c["background"] for c in _choices("alerts", "severity")}
    assert severity["critical"] != severity["warning"] != severity["info"]


@pytest.mark.parametrize("collection", ["penalties", "alerts", "timing_records", "stage_results"])
def test_officials_have_a_note_the_processor_never_writes(collection: str) -> None:
    note = _fields(collection)["note"]
    assert (note["type"], note["schema"]["is_nullable"]) == ("text", True)
    assert not note["meta"]["readonly"]
    published = {t.name: t for t in (ALERTS, PENALTIES, STAGE_RESULTS, TIMING_RECORDS)}
    assert "note" not in published[collection].columns


def test_events_can_be_published() -> None:
    public = _fields("events")["public"]
    assert public["type"] == "boolean"
    assert (public["schema"]["default_value"], public["schema"]["is_nullable"]) == (False, False)


def test_processor_events_are_read_only_in_the_studio() -> None:
    fields = _fields("processor_events")
    assert all(f["meta"]["readonly"] for f in fields.values()), [
        n for n, f in fields.items() if not f["meta"]["readonly"]
    ]


def _note_key(collection: str, **values: object) -> str:
    """The key format a field note shows, with its ‹placeholders› filled in."""
    note = _meta(collection, "key")["note"]
    described = re.search(r"own rows: (.+?) \(ADR 0003\)", note)
    assert described, note
    formats = described[1].split(" or ")
    keys = []
    for fmt in formats:
        key = fmt
        for name, value in values.items():
            key = re.sub(rf"‹{name}[^›]*›", str(value), key)
        keys.append(key)
    return " | ".join(keys)


def test_key_notes_describe_the_keys_the_code_builds() -> None:
    entry = EntryRef(17, 1, 117, "A / B", "T1", "confirmed", "356307044410016", "FMB920")
    assert _note_key("stage_results", stage=3, entry=17) == result_key(3, 17)

    span = AlertSpan("stopped", 3, 1777615264123, None, "warning", {}, None)
    alert = alert_output(entry, span).key
    assert _note_key("alerts", entry=17, kind="stopped", started_at=1777615264123) == alert

    fix = FixRef(1777615263000, 54.6, 25.1, 80.0, 90.0)
    later = FixRef(1777615264000, 54.6, 25.1, 80.0, 90.0)
    crossing = Crossing(
        "356307044410016", 21, 3, "finish_line", "cross", 1777615263500, 54.6, 25.1, 0.5,
        fix, later, "linear", 0,
    )  # fmt: skip
    fmt_values = {
        "entry": 17,
        "geofence": 21,
        "fix before": 1777615263000,
        "fix after": 1777615264000,
        "ordinal": 0,
    }
    assert _note_key("timing_records", **fmt_values) == record_key(entry, crossing)

    penalty_keys = _note_key(
        "penalties", stage=3, entry=17, zone=4, entered=1777615264123, waypoint=16
    ).split(" | ")
    # domain_runner/race.py builds these two.
    assert penalty_keys == [
        "auto:3:17:speeding:4:1777615264123",
        "auto:3:17:missed_waypoint:16",
    ]


def _relation(collection: str, field: str) -> str:
    related: str = next(
        r["related_collection"]
        for r in _snapshot()["relations"]
        if r["collection"] == collection and r["field"] == field
    )
    return related


def test_race_times_are_shown_in_the_event_zone() -> None:
    """Every instant an official reads or types goes through the extension, and its zone path
    leads, relation by relation, to events.timezone."""
    for field in _snapshot()["fields"]:
        if field["type"] != "timestamp" or field["field"] in ("updated_at", "created_at"):
            continue
        meta, where = field["meta"], f"{field['collection']}.{field['field']}"
        assert (meta["interface"], meta["display"]) == ("datetime-tenths", "datetime-tenths"), where
        path: str = meta["options"]["timezoneField"]
        collection, steps = field["collection"], path.split(".")
        for step in steps[:-1]:
            collection = _relation(collection, step)
        assert (collection, steps[-1]) == ("events", "timezone"), where


def test_durations_are_shown_as_minutes_seconds_tenths() -> None:
    for collection, field in [
        ("stage_results", "elapsed_ms"),
        ("stage_results", "penalty_ms"),
        ("stage_results", "total_ms"),
        ("stage_results", "gap_leader_ms"),
        ("stage_results", "gap_ahead_ms"),
        ("penalties", "amount_ms"),
        ("stages", "max_time_s"),
    ]:
        meta = _meta(collection, field)
        assert meta["display"] == "duration-ms", (collection, field)
        unit = "s" if field.endswith("_s") else "ms"
        assert meta["display_options"]["unit"] == unit
    assert _meta("stage_results", "gap_leader_ms")["display_options"]["prefix"] == "+"


def test_extensions_named_in_the_snapshot_are_in_the_bundle() -> None:
    manifest = json.loads((EXTENSION / "package.json").read_text())
    assert manifest["directus:extension"]["type"] == "bundle"
    bundle = (EXTENSION / manifest["directus:extension"]["path"]["app"]).read_text()
    interfaces = {f["meta"]["interface"] for f in _snapshot()["fields"]} - {None}
    displays = {f["meta"]["display"] for f in _snapshot()["fields"]} - {None}
    for name in (interfaces - BUILT_IN_INTERFACES) | (displays - BUILT_IN_DISPLAYS):
        assert re.search(rf"id: ['\"]{name}['\"]", bundle), f"{name} is not in the bundle"


ALIASES = {
    ("events", "stages"): ("stages", "event"),
    ("events", "entries"): ("entries", "event"),
    ("stages", "results"): ("stage_results", "stage"),
    ("stages", "timing_records"): ("timing_records", "stage"),
    ("stages", "penalties"): ("penalties", "stage"),
    ("entries", "results"): ("stage_results", "entry"),
    ("entries", "penalties"): ("penalties", "entry"),
    ("entries", "alerts"): ("alerts", "entry"),
}


def test_one_to_many_lists() -> None:
    aliases = {
        (f["collection"], f["field"])
        for f in _snapshot()["fields"]
        if f["type"] == "alias" and "o2m" in (f["meta"]["special"] or [])
    }
    assert aliases == set(ALIASES)
    for (one, alias), (many, field) in ALIASES.items():
        relation = next(
            r for r in _snapshot()["relations"] if (r["collection"], r["field"]) == (many, field)
        )
        assert relation["meta"]["one_field"] == alias
        meta = _meta(one, alias)
        assert meta["readonly"], (one, alias)
        assert meta["interface"] == "list-o2m", (one, alias)
        # A template, not a column list: a snapshot sorts arrays of strings alphabetically.
        assert meta["options"]["layout"] == "list", (one, alias)
        assert meta["options"]["template"], (one, alias)
    by_rank = next(
        r
        for r in _snapshot()["relations"]
        if (r["collection"], r["field"]) == ("stage_results", "stage")
    )
    assert by_rank["meta"]["sort_field"] == "rank"


def test_presets_name_fields_that_exist() -> None:
    presets = load_presets()
    assert {p.collection for p in presets} >= set(OUTPUTS)
    for preset in presets:
        fields = _fields(preset.collection)
        for name in (*preset.fields, *(s.lstrip("-") for s in preset.sort)):
            assert name in fields, (preset.collection, name)
            assert fields[name]["type"] != "alias", (preset.collection, name)
    results = next(p for p in presets if p.collection == "stage_results")
    assert results.sort[:2] == ("stage", "rank")
    assert {"rank", "entry", "total_ms", "gap_leader_ms", "status"} <= set(results.fields)
    alerts = next(p for p in presets if p.collection == "alerts")
    assert {"severity", "kind", "status", "entry"} <= set(alerts.fields)
