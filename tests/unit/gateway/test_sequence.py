"""Resume only when nothing after the client's id was trimmed."""

from __future__ import annotations

from processor.gateway.sequence import parse_id, plan_resume


def test_parse_id() -> None:
    assert parse_id("1777-3") == (1777, 3)
    assert parse_id("1777") == (1777, 0)
    assert parse_id("x-1") is None
    assert parse_id("-1-0") is None


def test_resume_while_since_is_still_in_the_stream() -> None:
    assert plan_resume("100-0", last_generated="200-0", max_deleted="50-0", first="90-0") == (
        "resume"
    )
    assert plan_resume("100-0", last_generated="200-0", max_deleted="0-0", first="100-0") == (
        "resume"
    )


def test_resume_when_nothing_came_after_since() -> None:
    assert plan_resume("200-0", last_generated="200-0", max_deleted="0-0", first=None) == "resume"


def test_snapshot_when_entries_after_since_were_trimmed_or_deleted() -> None:
    assert plan_resume("100-0", last_generated="200-0", max_deleted="0-0", first="150-0") == (
        "snapshot"
    )
    assert plan_resume("100-0", last_generated="200-0", max_deleted="0-0", first=None) == (
        "snapshot"
    )
    assert plan_resume("100-0", last_generated="200-0", max_deleted="100-1", first="1-0") == (
        "snapshot"
    )


def test_snapshot_for_no_id_a_bad_id_or_an_id_from_another_stream() -> None:
    kw = {"last_generated": "200-0", "max_deleted": "0-0", "first": "1-0"}
    assert plan_resume(None, **kw) == "snapshot"
    assert plan_resume("garbage", **kw) == "snapshot"
    assert plan_resume("300-0", **kw) == "snapshot"
