"""The Studio's default layouts: one global Directus preset per collection, as data.

Directus keeps a collection page's layout (its table columns, their widths, the sort, the
auto-refresh) in `directus_presets`; a row with `user`, `role` and `bookmark` all empty is the
default everyone starts from. The schema snapshot carries none of it, so the defaults live in
`presets.yaml` next to this module and `apply_presets` makes a Directus hold them (ADR 0012).

Invariant: only the global default preset of a declared collection is ever created, changed
or deleted (one per collection: extra global defaults of it are deleted, since Directus would
pick one of them at random); users' own layouts, role presets and bookmarks are never touched.
Planning is pure (`plan_presets`); a second apply after a complete one sends nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from processor.directus.client import AdminClient

__all__ = ["Preset", "PresetRequest", "apply_presets", "load_presets", "plan_presets"]

LAYOUT = "tabular"
PAGE_SIZE = 100
# The columns of directus_presets a default preset sets; the others stay as Directus has them.
MANAGED = ("layout", "layout_query", "layout_options", "refresh_interval", "filter", "search")


@dataclass(frozen=True)
class Preset:
    """A collection's default table: columns in order, sort, widths (px), auto-refresh (s)."""

    collection: str
    fields: tuple[str, ...]
    sort: tuple[str, ...]
    widths: Mapping[str, int]
    refresh_s: int | None = None

    def row(self) -> dict[str, Any]:
        """The `directus_presets` row (without id) that holds this default."""
        return {
            "bookmark": None,
            "user": None,
            "role": None,
            "collection": self.collection,
            "layout": LAYOUT,
            "layout_query": {
                LAYOUT: {"fields": list(self.fields), "sort": list(self.sort), "limit": PAGE_SIZE}
            },
            "layout_options": {LAYOUT: {"widths": dict(self.widths), "spacing": "cozy"}},
            "refresh_interval": self.refresh_s,
            "filter": None,
            "search": None,
        }


@dataclass(frozen=True)
class PresetRequest:
    """One REST request of a presets plan, with the collection it is for."""

    collection: str
    method: str
    path: str
    body: Any = None


def load_presets(text: str | None = None) -> tuple[Preset, ...]:
    """The declared presets (`presets.yaml` of this package, or `text` in its format)."""
    if text is None:
        text = (resources.files("processor.directus") / "presets.yaml").read_text()
    doc = yaml.safe_load(text) or {}
    if not isinstance(doc, dict):
        raise ValueError("presets: a mapping of collection → layout is expected")
    return tuple(_preset(str(name), spec) for name, spec in doc.items())


def _preset(collection: str, spec: Any) -> Preset:
    if not isinstance(spec, dict):
        raise ValueError(f"presets: {collection}: a mapping is expected")
    unknown = set(spec) - {"fields", "sort", "widths", "refresh"}
    if unknown:
        raise ValueError(f"presets: {collection}: unknown keys {sorted(unknown)}")
    fields = _names(collection, "fields", spec.get("fields"))
    sort = _names(collection, "sort", spec.get("sort", []))
    widths = spec.get("widths") or {}
    if not isinstance(widths, dict) or not all(
        isinstance(w, int) and w > 0 for w in widths.values()
    ):
        raise ValueError(f"presets: {collection}: widths are positive integers (px)")
    if set(widths) - set(fields):
        raise ValueError(f"presets: {collection}: widths of fields not shown")
    refresh = spec.get("refresh")
    if refresh is not None and (not isinstance(refresh, int) or refresh < 1):
        raise ValueError(f"presets: {collection}: refresh is a number of seconds ≥ 1")
    return Preset(collection, fields, sort, {str(k): int(v) for k, v in widths.items()}, refresh)


def _names(collection: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"presets: {collection}: {key} is a list of field names")
    if key == "fields" and not value:
        raise ValueError(f"presets: {collection}: no fields")
    return tuple(value)


def plan_presets(
    existing: Sequence[Mapping[str, Any]], declared: Sequence[Preset]
) -> list[PresetRequest]:
    """The requests that make Directus's global defaults (`existing`: the rows of
    directus_presets with user, role and bookmark empty) equal the declared ones."""
    requests: list[PresetRequest] = []
    for preset in declared:
        want = preset.row()
        rows = sorted(
            (r for r in existing if r.get("collection") == preset.collection),
            key=lambda r: int(r["id"]),
        )
        if not rows:
            requests.append(PresetRequest(preset.collection, "POST", "/presets", want))
            continue
        first, *extra = rows
        if any(first.get(k) != want[k] for k in MANAGED):
            body = {k: want[k] for k in MANAGED}
            requests.append(
                PresetRequest(preset.collection, "PATCH", f"/presets/{first['id']}", body)
            )
        requests.extend(
            PresetRequest(preset.collection, "DELETE", f"/presets/{row['id']}") for row in extra
        )
    return requests


async def apply_presets(
    client: AdminClient, presets: Sequence[Preset] | None = None, *, dry_run: bool = False
) -> list[str]:
    """Make `client`'s Directus hold the declared default layouts; the collections whose
    default was created or changed (or would be, with `dry_run`), in declaration order."""
    declared = load_presets() if presets is None else tuple(presets)
    existing = await client.get(
        "/presets",
        filter={
            "_and": [
                {"user": {"_null": True}},
                {"role": {"_null": True}},
                {"bookmark": {"_null": True}},
                {"collection": {"_in": [p.collection for p in declared] or ["-"]}},
            ]
        },
        fields=",".join(("id", "collection", *MANAGED)),
        limit=-1,
    )
    requests = plan_presets(existing or [], declared)
    if not dry_run:
        for request in requests:
            await client.send(request.method, request.path, request.body)
    changed = {r.collection for r in requests}
    return [p.collection for p in declared if p.collection in changed]
