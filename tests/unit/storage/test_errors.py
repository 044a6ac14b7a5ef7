"""Only data errors are row-level; everything else is retried."""

from __future__ import annotations

import asyncpg
import pytest
from asyncpg.exceptions import _base as asyncpg_base

from processor.storage.errors import ErrorClass, classify
from processor.storage.migrate import load_migrations
from processor.storage.rows import COLUMNS, SQL_TYPES, io_json


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (asyncpg.CheckViolationError("x"), ErrorClass.ROW),
        (asyncpg.NumericValueOutOfRangeError("x"), ErrorClass.ROW),
        (asyncpg.ProgramLimitExceededError("x"), ErrorClass.ROW),
        (asyncpg_base.DataError("bad value"), ErrorClass.ROW),
        (asyncpg.QueryCanceledError("x"), ErrorClass.TIMEOUT),
        (asyncpg.SerializationError("x"), ErrorClass.CONFLICT),
        (asyncpg.DeadlockDetectedError("x"), ErrorClass.CONFLICT),
        (asyncpg.AdminShutdownError("x"), ErrorClass.UNAVAILABLE),
        (asyncpg.TooManyConnectionsError("x"), ErrorClass.UNAVAILABLE),
        (asyncpg.UndefinedTableError("x"), ErrorClass.OTHER),
        (asyncpg.InsufficientPrivilegeError("x"), ErrorClass.OTHER),
        (ConnectionResetError(), ErrorClass.CONNECTION),
        (asyncpg.ConnectionDoesNotExistError("x"), ErrorClass.CONNECTION),
        (TimeoutError(), ErrorClass.TIMEOUT),
        (RuntimeError("?"), ErrorClass.OTHER),
    ],
)
def test_classify(exc: BaseException, expected: ErrorClass) -> None:
    assert classify(exc) is expected


def test_io_json_keeps_big_integers_exact_and_bytes_as_hex() -> None:
    assert io_json({}) == "{}"
    assert io_json({"1": 2**64 - 1, "2": b"\x01\xff"}) == '{"1":18446744073709551615,"2":"01ff"}'
    assert io_json({"3": -5}) == '{"3":-5}'


def test_column_lists_agree() -> None:
    assert len(COLUMNS) == len(SQL_TYPES)


def test_migrations_are_ordered_and_uniquely_versioned() -> None:
    migrations = load_migrations()
    versions = [m.version for m in migrations]
    assert versions == sorted(set(versions))
    assert migrations[0].name == "positions"
    assert {m.variant for m in migrations} == {None, "timescale", "plain"}
