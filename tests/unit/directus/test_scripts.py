"""The Flows' Run Script code, run by Node as Directus's isolate runs it (module.exports of
the operation's `data`). Skipped without Node."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from processor.directus.flows import script

RUNNER = """
const module = { exports: null };
eval(process.argv[1]);
let out;
try { out = { value: module.exports(JSON.parse(process.argv[2])) }; }
catch (e) { out = { error: String(e.message) }; }
process.stdout.write(JSON.stringify(out));
"""


def run(name: str, data: dict[str, Any]) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed: cannot run the Flows' scripts")
    done = subprocess.run(
        [node, "-e", RUNNER, script(name), json.dumps(data)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def intent(collection: str, payload: Any, user: str | None = "u1") -> Any:
    data = {
        "$trigger": {"payload": payload, "collection": collection, "keys": ["1"]},
        "$accountability": None if user is None else {"user": user, "role": "r"},
    }
    return run("officials_intent.js", data)["value"]


@pytest.mark.parametrize("collection", ["timing_records", "penalties", "stage_results"])
def test_a_persons_edit_is_manual(collection: str) -> None:
    assert intent(collection, {"status": "rejected"}) == {"status": "rejected", "source": "manual"}
    assert intent(collection, {"note": "x"}) == {"note": "x", "source": "manual"}


def test_an_alert_worked_stays_automatic_anything_else_is_manual() -> None:
    worked = {"status": "acknowledged", "note": "marshal on site"}
    assert intent("alerts", worked) == worked
    assert intent("alerts", {"status": "dismissed"}) == {"status": "dismissed"}
    assert intent("alerts", {"status": "ended", "ended_at": "2026-05-01T06:00:00Z"}) == {
        "status": "ended",
        "ended_at": "2026-05-01T06:00:00Z",
        "source": "manual",
    }


def test_no_user_an_explicit_source_or_nothing_is_left_alone() -> None:
    assert intent("penalties", {"status": "cancelled"}, user=None) == {"status": "cancelled"}
    assert intent("penalties", {"source": "auto", "status": "valid"}) == {
        "source": "auto",
        "status": "valid",
    }
    assert intent("penalties", {}) == {}
    assert intent("penalties", None) is None
    assert intent("penalties", [1, 2]) == [1, 2]


def message(**data: Any) -> dict[str, Any]:
    return run("critical_alert.js", data)


def test_the_notification_names_the_car_and_the_stage() -> None:
    out = message(
        notified=[],
        race_control=[{"id": "a"}, {"id": "b"}],
        alert={
            "kind": "signal_lost",
            "started_at": "2026-05-01T06:01:00.000Z",
            "entry": {"number": 105, "crew_name": "A / B"},
            "stage": {"name": "SS1"},
            "details": {"gap_s": 120},
        },
    )["value"]
    assert out["recipients"] == ["a", "b"]
    assert out["subject"] == "Critical alert: signal lost — car 105, SS1"
    assert "A / B" in out["message"]
    assert '"gap_s":120' in out["message"]


def test_once_per_alert_and_only_with_someone_to_tell() -> None:
    users = [{"id": "a"}]
    assert message(notified=[{"id": 1}], race_control=users, alert={}) == {
        "error": "already notified"
    }
    assert message(notified=[], race_control=[], alert={}) == {
        "error": "no active race control user"
    }
    out = message(notified=[], race_control=users, alert={"kind": "stopped", "entry": None})
    assert out["value"]["subject"] == "Critical alert: stopped — no car"
