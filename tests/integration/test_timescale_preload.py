"""TimescaleDB installed but not preloaded, on a real server of its own.

Starts a private PostgreSQL cluster from binaries that have TimescaleDB
(`TEST_TIMESCALE_PG_BIN`: the `bin` folder of such an installation; `.ci/run` sets it
when it finds the development build) with and without `shared_preload_libraries`, and
runs the real `processor migrate` and `processor run` against it. Skipped, with the
reason, where no such binaries are given.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BIN = os.environ.get("TEST_TIMESCALE_PG_BIN", "")
PROCESSOR = str(Path(sys.executable).with_name("processor"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A throwaway cluster: initdb, start with or without the loader, stop, remove."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin = bin_dir
        self.data = root / "data"
        self.root = root
        self.port = _free_port()
        self.url = self.database("postgres")

    def database(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust")

    def start(self, *, preload: bool) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        options += " -c timescaledb.telemetry_level=off" if preload else ""
        options += f" -c shared_preload_libraries={'timescaledb' if preload else ''!r}"
        log = str(self.root / "server.log")
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w", "start"
        )

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def psql(self, sql: str) -> str:
        out = subprocess.run(
            [str(self.bin / "psql"), self.url, "-Atc", sql],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout.strip()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not BIN:
        pytest.skip("TEST_TIMESCALE_PG_BIN is not set (no PostgreSQL binaries with TimescaleDB)")
    bin_dir = Path(BIN)
    if not (bin_dir / "pg_ctl").exists():
        pytest.skip(f"TEST_TIMESCALE_PG_BIN has no pg_ctl: {BIN}")
    with tempfile.TemporaryDirectory(prefix="processor-tsdb-") as tmp:
        made = Cluster(bin_dir, Path(tmp))
        made.init()
        try:
            yield made
        finally:
            subprocess.run(
                [
                    *(["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []),
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(made.data),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )


def _processor(
    url: str, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "PROCESSOR_DATABASE_URL": url,
        "PROCESSOR_LOG_FORMAT": "json",
        "PROCESSOR_HTTP_ENABLED": "false",
        **env,
    }
    return subprocess.run(
        [PROCESSOR, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )


def test_not_preloaded_falls_back_to_plain_or_refuses_in_one_line(cluster: Cluster) -> None:
    cluster.start(preload=False)
    assert (
        cluster.psql("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
        == "1"
    )
    cluster.psql("CREATE DATABASE fallback")
    cluster.psql("CREATE DATABASE required")

    auto = _processor(cluster.database("fallback"), "migrate")
    assert auto.returncode == 0, auto.stderr
    assert "mode: plain" in auto.stdout
    output = (auto.stdout + auto.stderr).splitlines()
    warnings = [line for line in output if "timescaledb_not_preloaded" in line]
    assert len(warnings) == 1, output
    assert "shared_preload_libraries" in warnings[0]

    required = _processor(
        cluster.database("required"),
        "migrate",
        PROCESSOR_DATABASE_MODE="timescale",
    )
    assert required.returncode == 1
    assert required.stderr.strip().splitlines() == [
        "migrate failed: the timescaledb extension is available but not preloaded: add"
        " timescaledb to shared_preload_libraries in postgresql.conf and restart the server"
    ]
    assert "Traceback" not in required.stderr + required.stdout


def test_a_timescale_database_whose_server_lost_the_loader_is_refused(cluster: Cluster) -> None:
    cluster.start(preload=True)
    cluster.psql("CREATE DATABASE race")
    url = cluster.database("race")
    first = _processor(url, "migrate")
    assert first.returncode == 0, first.stderr
    assert "mode: timescale" in first.stdout
    cluster.stop()
    cluster.start(preload=False)  # someone edited postgresql.conf

    again = _processor(url, "migrate")
    assert again.returncode == 1
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1, again.stderr
    assert "migrated in timescale mode but" in lines[0]
    assert "not preloaded" in lines[0]

    # `processor run` says so and exits instead of retrying for ever.
    run = _processor(url, "run", "--until-idle", timeout=60)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "database_refused" in run.stderr
    # The server never saw the extension loaded half-way: it is still up and answering.
    assert cluster.psql("SELECT 1") == "1"
