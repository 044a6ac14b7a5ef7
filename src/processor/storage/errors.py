"""Which database errors a retry can cure, and which belong to one row.

Invariant: a class is decided from the SQLSTATE wherever the server gives a meaningful
one. Citus gives `XX000` (internal error) in two cases that are not internal: a worker's
error reported from COPY (`ReportCopyError` keeps the worker's message and drops its
SQLSTATE, so a duplicate key or an oversized index row arrives as `XX000`), and a lost
worker connection inside a distributed transaction. Those are recognised by their
(English, as the server reports them) messages; an `XX000` not recognised stays OTHER —
retried, never dead-lettered, since an unknown error must never cost a position.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

import asyncpg
from asyncpg.exceptions import _base as asyncpg_base

# SQLSTATE classes caused by the data of a row: 22 data exception, 23 integrity
# constraint violation, 54 program limit exceeded (e.g. a value too large to index).
_ROW_LEVEL_CLASSES = frozenset({"22", "23", "54"})


class ErrorClass(StrEnum):
    ROW = "row"
    CONNECTION = "connection"
    TIMEOUT = "timeout"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"
    OTHER = "other"


# Citus's XX000 wrappings, by the start of the message: the worker's own message (the
# SQLSTATE it had, in PostgreSQL's message catalogue) or Citus's own for a lost worker.
_CITUS_WRAPPED: tuple[tuple[str, str], ...] = (
    ("duplicate key value violates unique constraint", "23505"),
    ("null value in column", "23502"),
    ("new row for relation", "23514"),  # … violates check constraint
    ("insert or update on table", "23503"),  # … violates foreign key constraint
    ("conflicting key value violates exclusion constraint", "23P01"),
    ("index row requires", "54000"),
    ("index row size", "54000"),
    ("invalid input syntax", "22P02"),
    ("invalid byte sequence", "22021"),
    ("value too long for type", "22001"),
    ("unsupported unicode escape sequence", "22P05"),
    ("canceling statement due to statement timeout", "57014"),
    ("terminating connection due to administrator command", "57P01"),
    ("the database system is shutting down", "57P03"),
    ("the database system is starting up", "57P03"),
    ("the database system is in recovery mode", "57P03"),
    ("could not serialize access", "40001"),
    ("deadlock detected", "40P01"),
    ("failure on connection marked as essential", "08006"),
    ("connection to the remote node", "08006"),
    ("connection establishment for node", "08006"),
    ("failed to prepare transaction", "08006"),
    ("could not commit transaction for shard", "08006"),
    ("postmaster was shut down", "57P01"),
)


def effective_sqlstate(exc: asyncpg.PostgresError) -> str:
    """The SQLSTATE that says what happened: the server's, or for a Citus `XX000` the
    one its message stands for (`_CITUS_WRAPPED`)."""
    state = exc.sqlstate or ""
    if state != "XX000":
        return state
    message = (getattr(exc, "message", None) or str(exc)).strip().lower()
    for prefix, wrapped in _CITUS_WRAPPED:
        if message.startswith(prefix):
            return wrapped
    return state


def classify(exc: BaseException) -> ErrorClass:
    """Map an exception from a write to what the writer should do about it.

    Only ROW errors are ever dead-lettered, and only once isolated to one row. Every
    other class is retried with backoff: an unknown error must never lose a position.
    """
    if isinstance(exc, asyncpg.PostgresError):
        state = effective_sqlstate(exc)
        if state[:2] in _ROW_LEVEL_CLASSES:
            return ErrorClass.ROW
        if state == "57014":  # query_canceled: statement_timeout
            return ErrorClass.TIMEOUT
        if state in ("40001", "40P01", "55P03"):  # serialization, deadlock, lock not available
            return ErrorClass.CONFLICT
        if state[:2] == "08":  # connection exception
            return ErrorClass.CONNECTION
        if state[:2] in ("53", "57", "58"):  # resources, operator intervention, system
            return ErrorClass.UNAVAILABLE
        return ErrorClass.OTHER
    if isinstance(exc, asyncpg_base.DataError):  # client-side encoding of one value failed
        return ErrorClass.ROW
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return ErrorClass.TIMEOUT
    if isinstance(exc, OSError | ConnectionError | asyncpg.InterfaceError):
        return ErrorClass.CONNECTION
    return ErrorClass.OTHER
