"""The domain's only contact with shapely, which ships no type stubs.

Shapely is used for what it is good at and nothing that decides a result: the
STRtree prunes candidate (segment, geofence) pairs by bounding box, and GEOS checks
that a configured polygon is simple. Every number a crossing carries is computed by
the domain's own scalar code, so results never depend on GEOS versions or on how a
vectorised call happens to round.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely

XY = tuple[float, float]
Box = tuple[float, float, float, float]  # min x, min y, max x, max y


def segment_box(a: XY, b: XY) -> Box:
    """The bounding box of a segment."""
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1]))


def polygon_problem(rings: Sequence[Sequence[XY]], min_area: float) -> str | None:
    """Why a polygon (exterior ring, then holes, in metres) is unusable, or None."""
    polygon = shapely.Polygon(rings[0], rings[1:])
    if not shapely.is_valid(polygon):
        reason: str = shapely.is_valid_reason(polygon)
        return f"polygon is not simple ({reason})"
    area: float = shapely.area(polygon)
    if area < min_area:
        return f"polygon area {area:.3f} m² is below {min_area} m²"
    return None


class BoxIndex:
    """An STRtree over boxes: which boxes each of many query boxes intersects.

    Querying all of a window's segments in one vectorised call keeps the cost per
    segment flat as the number of geofences grows (an event has tens to hundreds).
    """

    __slots__ = ("_size", "_tree")

    def __init__(self, boxes: Sequence[Box]) -> None:
        self._size = len(boxes)
        geoms = [shapely.box(*b) for b in boxes]
        self._tree = shapely.STRtree(geoms)

    def __len__(self) -> int:
        return self._size

    def query(self, boxes: Sequence[Box]) -> list[tuple[int, int]]:
        """Sorted (query index, item index) pairs whose boxes intersect (edges count)."""
        if not boxes or not self._size:
            return []
        arr = np.asarray(boxes, dtype=float)
        queries = shapely.box(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3])
        hits = self._tree.query(queries)
        pairs: list[tuple[int, int]] = sorted(zip(hits[0].tolist(), hits[1].tolist(), strict=True))
        return pairs
