"""Which database errors a retry can cure, and which belong to one row."""

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


def classify(exc: BaseException) -> ErrorClass:
    """Map an exception from a write to what the writer should do about it.

    Only ROW errors are ever dead-lettered, and only once isolated to one row. Every
    other class is retried with backoff: an unknown error must never lose a position.
    """
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
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
