"""The docs name every setting and every metric: they cannot silently fall behind."""

from __future__ import annotations

from pathlib import Path

from processor.core.settings import Settings
from processor.observability.metrics import Metrics

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [n for n in Settings.model_fields if f"`PROCESSOR_{n.upper()}`" not in text]
    assert not missing, f"document these in docs/configuration.md: {missing}"


def test_every_metric_is_documented() -> None:
    text = (DOCS / "metrics.md").read_text()
    suffix = {"counter": "_total", "info": "_info"}
    names = {
        metric.name + suffix.get(metric.type, "")
        for metric in Metrics().registry.collect()
        if not metric.name.startswith("process_")
    }
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"document these in docs/metrics.md: {missing}"
