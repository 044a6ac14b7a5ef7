"""How many `processor_events` items a real Directus 10.13 creates per second (batches of
100, as the dispatcher sends them), with the project's roles and Flows applied, then with the
example critical-alert Flow inactive, then also without activity tracking on the collection.

Run from the repository root (Node.js needed): `.venv/bin/python bench/directus_accept_rate.py`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.directus_server import apply_access, running_directus

from processor.dispatch.directus import DirectusClient

TOKEN = "bench-" + os.urandom(8).hex()


def items(n: int, start: int) -> list[dict[str, Any]]:
    row = {"rank": 3, "status": "running", "total_ms": 123456}
    return [
        {
            "event_key": f"k:{start + i}",
            "kind": "stage_result.updated",
            "payload": {
                "collection": "stage_results",
                "change": "updated",
                "id": start + i,
                "key": f"1:{i}",
                "version": start + i,
                "data": {"id": start + i, **row},
            },
            "created_at": "2026-12-02T18:00:00+00:00",
        }
        for i in range(n)
    ]


async def rate(url: str, label: str, start: int) -> None:
    client = DirectusClient(url, TOKEN, 60)
    began, n = time.perf_counter(), 0
    try:
        for _ in range(6):
            await client.create(items(100, start + n))
            n += 100
    finally:
        await client.close()
    print(f"{label}: {n / (time.perf_counter() - began):.0f} items/s", flush=True)


def main() -> None:
    with running_directus(Path(tempfile.mkdtemp(prefix="bench-accept-"))) as server:
        apply_access(server, TOKEN)
        asyncio.run(rate(server.base_url, "roles and Flows applied", 0))
        for flow in server.admin("GET", "/flows?fields=id,name"):
            if "Critical" in flow["name"]:
                server.admin("PATCH", f"/flows/{flow['id']}", {"status": "inactive"})
        asyncio.run(rate(server.base_url, "critical-alert Flow inactive", 10_000))
        server.admin("PATCH", "/collections/processor_events", {"meta": {"accountability": None}})
        asyncio.run(rate(server.base_url, "and no activity tracking", 20_000))


if __name__ == "__main__":
    main()
