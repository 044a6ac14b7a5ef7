"""The Studio's default layouts: parsed strictly, planned as the fewest requests (no services).

`processor.directus.presets`; what the layouts show is checked against the snapshot in
tests/unit/test_studio_schema.py and in a real Studio in tests/integration/test_studio.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from processor.directus.presets import Preset, load_presets, plan_presets

RESULTS = Preset(
    "stage_results", ("stage", "rank", "total_ms"), ("stage", "rank"), {"rank": 80}, 10
)
ALERTS = Preset("alerts", ("started_at", "severity"), ("-started_at",), {})


def _stored(preset: Preset, id_: int, **changes: Any) -> dict[str, Any]:
    return {"id": id_, **preset.row(), **changes}


def test_the_shipped_presets_load() -> None:
    presets = load_presets()
    assert len({p.collection for p in presets}) == len(presets)
    results = next(p for p in presets if p.collection == "stage_results")
    row = results.row()
    assert (row["user"], row["role"], row["bookmark"]) == (None, None, None)
    assert row["layout"] == "tabular"
    assert row["layout_query"]["tabular"]["sort"][:2] == ["stage", "rank"]
    assert row["layout_query"]["tabular"]["fields"][:3] == ["stage", "rank", "entry"]
    assert row["refresh_interval"] == 10


@pytest.mark.parametrize(
    "text",
    [
        "- stage_results",
        "stage_results: [rank]",
        "stage_results: {sort: [rank]}",
        "stage_results: {fields: []}",
        "stage_results: {fields: [rank], colour: red}",
        "stage_results: {fields: [rank], widths: {entry: 100}}",
        "stage_results: {fields: [rank], widths: {rank: -1}}",
        "stage_results: {fields: [rank], refresh: 0}",
        "stage_results: {fields: [rank, 3]}",
    ],
)
def test_a_malformed_file_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="presets"):
        load_presets(text)


def test_missing_defaults_are_created() -> None:
    requests = plan_presets([], [RESULTS, ALERTS])
    assert [(r.method, r.path, r.collection) for r in requests] == [
        ("POST", "/presets", "stage_results"),
        ("POST", "/presets", "alerts"),
    ]
    assert requests[0].body == RESULTS.row()


def test_equal_defaults_send_nothing() -> None:
    assert plan_presets([_stored(RESULTS, 4), _stored(ALERTS, 5)], [RESULTS, ALERTS]) == []


def test_a_changed_default_is_patched_with_the_managed_columns_only() -> None:
    stored = _stored(RESULTS, 4, refresh_interval=None, icon="star")
    (request,) = plan_presets([stored], [RESULTS])
    assert (request.method, request.path) == ("PATCH", "/presets/4")
    assert set(request.body) == {
        "layout",
        "layout_query",
        "layout_options",
        "refresh_interval",
        "filter",
        "search",
    }
    assert request.body["refresh_interval"] == 10


def test_extra_defaults_of_a_collection_are_deleted_and_others_left_alone() -> None:
    other = {"id": 1, "collection": "events", "layout": "cards"}  # not declared: untouched
    requests = plan_presets([other, _stored(RESULTS, 9), _stored(RESULTS, 3)], [RESULTS])
    assert [(r.method, r.path) for r in requests] == [("DELETE", "/presets/9")]
