"""The SQL fixture and the Directus snapshot describe the same collections (no services).

The integration test (tests/integration/test_directus_schema.py) compares what a real Directus
creates with what the fixture creates; this one catches most drift without Node or PostgreSQL.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "directus" / "snapshot.yaml"
PACKAGE = ROOT / "directus" / "package.json"
SAMPLE_EVENT = ROOT / "src" / "processor" / "tools" / "simulator" / "data" / "sample-event.json"
COLLECTIONS = {
    "events",
    "devices",
    "entries",
    "stages",
    "geofences",
    "io_mappings",
    "timing_records",
    "stage_results",
    "alerts",
    "penalties",
    "processor_events",
}
OUTPUTS = {"timing_records", "stage_results", "alerts", "penalties"}
# Folder collections (no table): the Studio's navigation groups (ADR 0012).
FOLDERS = {"race", "timing_and_results", "configuration", "system"}
# Directus's data_type in the snapshot → the type as the fixture spells it.
SQL_TYPES = {
    "integer": "integer",
    "bigint": "bigint",
    "real": "real",
    "numeric": "numeric",
    "json": "json",
    "text": "text",
    "boolean": "boolean",
    "character varying": "varchar",
    "timestamp with time zone": "timestamptz",
}
_CREATE = re.compile(r"^CREATE TABLE public\.(?P<table>\w+) \((?P<body>.*)\)$", re.DOTALL)
_REFERENCES = re.compile(
    r"CONSTRAINT (?P<name>\w+) REFERENCES public\.(?P<table>\w+) \(id\)"
    r"(?: ON DELETE (?P<on_delete>SET NULL|CASCADE|RESTRICT|NO ACTION))?"
)


@dataclass(frozen=True)
class Column:
    name: str
    definition: str

    @property
    def sql_type(self) -> str:
        first = self.definition.split()[0]
        return {"serial": "integer"}.get(first, first.split("(")[0])

    @property
    def nullable(self) -> bool:
        return "NOT NULL" not in self.definition and "PRIMARY KEY" not in self.definition

    @property
    def unique(self) -> bool:
        return " UNIQUE" in self.definition or "PRIMARY KEY" in self.definition

    @property
    def length(self) -> int | None:
        match = re.match(r"varchar\((\d+)\)", self.definition)
        return int(match.group(1)) if match else None


def _statements() -> list[str]:
    text = (resources.files("processor.storage") / "directus_fixture.sql").read_text()
    without_comments = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    return [s.strip() for s in without_comments.split(";") if s.strip()]


def _split_columns(body: str) -> list[str]:
    """Split a CREATE TABLE body on its top-level commas (not those in numeric(18, 9))."""
    items, depth, current = [], 0, ""
    for char in body:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [" ".join(item.split()) for item in items if item.strip()]


@functools.cache
def _fixture() -> dict[str, dict[str, Column]]:
    tables: dict[str, dict[str, Column]] = {}
    for statement in _statements():
        match = _CREATE.match(statement)
        assert match, f"not a CREATE TABLE public.… statement: {statement[:80]!r}"
        columns = [Column(*item.split(" ", 1)) for item in _split_columns(match["body"])]
        tables[match["table"]] = {c.name: c for c in columns}
    return tables


@functools.cache
def _snapshot() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc: dict[str, Any] = yaml.load(SNAPSHOT.read_text(), Loader=loader)
    return doc


def _snapshot_fields() -> dict[str, dict[str, dict[str, Any]]]:
    fields: dict[str, dict[str, dict[str, Any]]] = {}
    for field in _snapshot()["fields"]:
        if field["type"] != "alias":
            fields.setdefault(field["collection"], {})[field["field"]] = field
    return fields


def test_fixture_is_only_create_table_statements_for_the_collections() -> None:
    statements = _statements()
    assert all(s.startswith("CREATE TABLE public.") for s in statements)
    assert set(_fixture()) == COLLECTIONS
    assert len(statements) == len(COLLECTIONS)
    text = " ".join(statements).lower()
    for word in ("telemetry", "directus_", "drop ", "alter ", "insert ", "create index"):
        assert word not in text


def test_fixture_is_not_a_migration() -> None:
    """DESIGN rule 2: the migration runner must never find it."""
    migrations = resources.files("processor.storage") / "migrations"
    names = [item.name for item in migrations.iterdir()]
    assert "directus_fixture.sql" not in names
    assert not any("directus" in name or "public." in name for name in names)


def test_snapshot_lists_the_same_collections() -> None:
    snapshot = _snapshot()
    tables = {c["collection"] for c in snapshot["collections"] if c.get("schema")}
    folders = {c["collection"] for c in snapshot["collections"] if not c.get("schema")}
    assert tables == COLLECTIONS
    assert folders == FOLDERS
    assert set(_snapshot_fields()) == COLLECTIONS
    assert snapshot["vendor"] == "postgres"


def test_snapshot_is_made_with_the_pinned_directus() -> None:
    pinned = json.loads(PACKAGE.read_text())["dependencies"]["directus"]
    assert str(_snapshot()["directus"]) == pinned


@pytest.mark.parametrize("collection", sorted(COLLECTIONS))
def test_fixture_columns_match_snapshot_fields(collection: str) -> None:
    fields = _snapshot_fields()[collection]
    columns = _fixture()[collection]
    # A fresh apply creates the columns in the snapshot's order of the fields (their creation
    # order: top-level fields, then those in form groups); meta.sort is only the form's order.
    assert list(columns) == list(fields)
    for name, column in columns.items():
        schema = fields[name]["schema"]
        where = f"{collection}.{name}"
        assert column.sql_type == SQL_TYPES[schema["data_type"]], where
        assert column.nullable == schema["is_nullable"], where
        assert column.unique == schema["is_unique"], where
        assert column.length == (
            schema["max_length"] if schema["data_type"] == "character varying" else None
        ), where
        if schema["is_primary_key"]:
            assert schema["has_auto_increment"], where
            assert column.definition.startswith("serial"), where


def test_fixture_foreign_keys_match_snapshot_relations() -> None:
    relations = {
        (r["collection"], r["field"]): (
            r["related_collection"],
            r["schema"]["constraint_name"],
            r["schema"]["on_delete"],
        )
        for r in _snapshot()["relations"]
    }
    references = {}
    for table, columns in _fixture().items():
        for column in columns.values():
            match = _REFERENCES.search(column.definition)
            if match:
                on_delete = match["on_delete"] or "NO ACTION"
                references[(table, column.name)] = (match["table"], match["name"], on_delete)
    assert references == relations


def test_outputs_carry_a_deterministic_key_and_a_source() -> None:
    fields = _snapshot_fields()
    for collection in OUTPUTS:
        key = fields[collection]["key"]["schema"]
        assert (key["is_unique"], key["is_nullable"]) == (True, True), collection
        source = fields[collection]["source"]["schema"]
        assert (source["is_nullable"], source["default_value"]) == (False, "manual"), collection
    event_key = fields["processor_events"]["event_key"]["schema"]
    assert (event_key["is_unique"], event_key["is_nullable"]) == (True, False)


def test_the_sample_event_fits_the_collections() -> None:
    """Every field of every row the simulator ships has a column of its own."""
    doc = json.loads(SAMPLE_EVENT.read_text())
    fixture = _fixture()
    for collection in ("events", "stages", "geofences", "devices", "entries"):
        missing = {field for row in doc[collection] for field in row} - set(fixture[collection])
        assert not missing, f"{collection}: no column for {sorted(missing)}"
