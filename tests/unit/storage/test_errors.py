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
    assert {m.variant for m in migrations} == {None, "timescale", "plain", "citus"}


def _server_error(sqlstate: str, message: str) -> asyncpg.PostgresError:
    """An error as asyncpg builds it from the server's fields."""
    error = asyncpg.PostgresError.new({"C": sqlstate, "M": message, "S": "ERROR"})
    assert isinstance(error, asyncpg.PostgresError)
    return error


@pytest.mark.parametrize(
    ("sqlstate", "message", "expected"),
    [
        # Citus COPY (ReportCopyError): the worker's message, its SQLSTATE dropped.
        (
            "XX000",
            'duplicate key value violates unique constraint "positions_pkey_102011"',
            ErrorClass.ROW,
        ),
        ("XX000", "index row requires 12024 bytes, maximum size is 8191", ErrorClass.ROW),
        ("XX000", "invalid input syntax for type json", ErrorClass.ROW),
        ("XX000", "canceling statement due to statement timeout", ErrorClass.TIMEOUT),
        ("XX000", "terminating connection due to administrator command", ErrorClass.UNAVAILABLE),
        # Citus's own, for a worker lost inside a distributed transaction.
        (
            "XX000",
            "failure on connection marked as essential: 127.0.0.1:5442",
            ErrorClass.CONNECTION,
        ),
        (
            "XX000",
            "failed to prepare transaction 'citus_0_1' on host 10.0.0.2:5432",
            ErrorClass.CONNECTION,
        ),
        # Anything else internal stays retried, never dead-lettered.
        ("XX000", "cache lookup failed for relation 1234", ErrorClass.OTHER),
        ("XX000", "could not read block 7 in file", ErrorClass.OTHER),
        # Preserved SQLSTATEs (ReportResultError) are read as they are.
        ("23505", "duplicate key value violates unique constraint", ErrorClass.ROW),
        ("54000", "index row requires 12024 bytes", ErrorClass.ROW),
        ("08006", "connection to the remote node 127.0.0.1:5442 failed", ErrorClass.CONNECTION),
    ],
)
def test_classify_sees_through_citus_wrapping(
    sqlstate: str, message: str, expected: ErrorClass
) -> None:
    assert classify(_server_error(sqlstate, message)) is expected
