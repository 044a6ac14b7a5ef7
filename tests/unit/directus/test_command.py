"""`processor directus apply` without a Directus: its usage errors and exit codes."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from processor.cli import app


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens once the socket is closed


def test_no_admin_token_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        app,
        ["directus", "apply", "--url", "http://127.0.0.1:1"],
        env={"PROCESSOR_DIRECTUS_ADMIN_TOKEN": ""},
    )
    assert result.exit_code == 2
    assert "set PROCESSOR_DIRECTUS_ADMIN_TOKEN" in result.output


def test_an_unreachable_directus_exits_1_without_the_token() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = CliRunner().invoke(
        app,
        ["directus", "apply", "--url", url, "--token-env", "MY_ADMIN_TOKEN"],
        env={"MY_ADMIN_TOKEN": "very-secret-admin-token"},
    )
    assert result.exit_code == 1
    assert "GET /fields: HTTP 0 UNREACHABLE" in result.output
    assert "very-secret-admin-token" not in result.output
