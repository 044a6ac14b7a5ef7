"""The gateway's metrics are documented like every other (docs/metrics.md)."""

from __future__ import annotations

from pathlib import Path

from processor.gateway.metrics import GatewayMetrics

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_every_gateway_metric_is_documented() -> None:
    text = (DOCS / "metrics.md").read_text()
    suffix = {"counter": "_total", "info": "_info"}
    names = {
        metric.name + suffix.get(metric.type, "")
        for metric in GatewayMetrics().registry.collect()
        if metric.name.startswith("processor_gateway")
    }
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"document these in docs/metrics.md: {missing}"
