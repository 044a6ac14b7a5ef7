"""Sequence numbers are the live stream's entry ids; whether a reconnecting client can
resume from its last one or needs a snapshot.

Invariant: `plan_resume` says "resume" only when every entry after the client's id is
still in the stream (none was trimmed or deleted), so resuming never skips a change.
"""

from __future__ import annotations

from typing import Literal

StreamId = tuple[int, int]


def parse_id(value: str) -> StreamId | None:
    """`"1777629600412-3"` → (1777629600412, 3); None when it is not an entry id."""
    head, sep, tail = value.partition("-")
    try:
        ms, seq = int(head), int(tail) if sep else 0
    except ValueError:
        return None
    if ms < 0 or seq < 0:
        return None
    return (ms, seq)


def plan_resume(
    since: str | None, *, last_generated: str, max_deleted: str, first: str | None
) -> Literal["resume", "snapshot"]:
    """`since`: the client's last id; the rest is XINFO STREAM of the live stream
    (`last-generated-id`, `max-deleted-entry-id`, `recorded-first-entry-id` or the
    first entry's id; None when the stream is empty). Trimming removes from the head and
    does not move `max-deleted-entry-id`, so an id the client received is safe to resume
    from while it is itself still in the stream (nothing after it was trimmed), or when
    nothing came after it at all."""
    if since is None:
        return "snapshot"
    mine, last, deleted = parse_id(since), parse_id(last_generated), parse_id(max_deleted)
    if mine is None or last is None or deleted is None:
        return "snapshot"
    if mine > last:  # an id from another stream (the stream was recreated)
        return "snapshot"
    if mine < deleted:  # an entry after it was deleted (XDEL)
        return "snapshot"
    if mine == last:
        return "resume"
    head = parse_id(first) if first else None
    return "resume" if head is not None and head <= mine else "snapshot"
