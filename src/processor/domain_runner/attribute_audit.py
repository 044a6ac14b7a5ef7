"""Values that do not fit their IO mapping: counted always, logged once per mapping.

A tracker sends the same misfit every second (a mapping with the wrong width, an enum
missing a label), so one log line per mapping says what is wrong and the counter
(`processor_attribute_values_unfit_total`) says how often; neither is silent
(issue 17). The value itself is never lost: it stays in `telemetry.positions.io`.

Invariant: the logged set is bounded (`max_logged` mappings); past it, misfits are
still counted, and one line says that logging stopped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import structlog

from processor.core.timeparse import format_ms
from processor.domain.attributes import IoMapping, Unfit
from processor.observability.metrics import Metrics

log = structlog.get_logger(__name__)


class AttributeAudit:
    """One per process (the domain stage's `ConfigSource`, a backfill run)."""

    def __init__(self, metrics: Metrics | None = None, max_logged: int = 10_000) -> None:
        self.metrics = metrics
        self.max_logged = max_logged
        self.counts: Counter[tuple[IoMapping, str]] = Counter()
        self._logged: set[IoMapping] = set()
        self._full = False

    def record(self, found: Iterable[Unfit], device_id: str, ts_ms: int) -> None:
        for unfit in found:
            mapping = unfit.mapping
            self.counts[(mapping, unfit.reason)] += 1
            if self.metrics is not None:
                self.metrics.attribute_values_unfit.labels(mapping.type, unfit.reason).inc()
            if mapping in self._logged:
                continue
            if len(self._logged) >= self.max_logged:
                if not self._full:
                    self._full = True
                    log.warning("attribute_value_unfit_log_full", mappings=self.max_logged)
                continue
            self._logged.add(mapping)
            log.warning(
                "attribute_value_unfit",
                mapping=mapping.describe(),
                row=mapping.row_id,
                model=mapping.model,
                io_id=mapping.io_id,
                name=mapping.name,
                type=mapping.type,
                width=mapping.width,
                reason=unfit.reason,
                raw=str(unfit.raw)[:80],
                device_id=device_id,
                ts=format_ms(ts_ms),
                note="left out of the attributes (the raw value stays in positions.io);"
                " logged once per mapping, counted in processor_attribute_values_unfit_total",
            )

    @property
    def total(self) -> int:
        return sum(self.counts.values())
