"""A real Directus for integration tests: the project's snapshot on a scratch database.

Shared by every test that needs Directus itself (the schema check, roles and Flows, the
dispatcher's end to end). `scripts/directus.sh` installs the pinned Directus
(directus/package-lock.json) into a cache folder outside the repo, bootstraps a scratch
database and applies directus/snapshot.yaml; the server then runs on 127.0.0.1 on a free port
with a generated static admin token, and is stopped (and the database dropped) afterwards.

    from tests.integration.directus_server import DirectusServer, running_directus

    @pytest.fixture(scope="module")
    def directus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectusServer]:
        with running_directus(tmp_path_factory.mktemp("directus")) as server:
            yield server

`server.request("GET", "/items/stages", token=server.admin_token)` → (status, body);
`apply_access(server, dispatcher_token)` runs `processor directus apply` (roles, permissions,
the dispatcher's user, Flows); `server.create_user(role_id, email=…, password=…)` and
`server.login(email, password)` give a user of a role and an access token like the Studio's;
`server.stop()` / `server.start()` restart it on the same port and database (a Directus
outage in the middle of a test). Extra environment for the server (`CACHE_ENABLED`,
`WEBSOCKETS_ENABLED`, …) goes in `env=`.

Invariant: a test either gets a server that answers `/server/health`, or is skipped with the
reason (Node.js missing, `PROCESSOR_SKIP_DIRECTUS=1`), or fails with the install/server log;
whatever happens, the server process group is stopped and the scratch database dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from processor.directus.apply import Outcome, apply
from processor.directus.client import AdminClient
from tests.conftest import ADMIN_URL, _with_database

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "directus.sh"
# A cold install (npm ci, compiling isolated-vm) + bootstrap + apply; the server start.
INSTALL_TIMEOUT_S = 780
START_TIMEOUT_S = 120
# What a test module that starts Directus should allow (pytest.mark.timeout).
DIRECTUS_TIMEOUT_S = 900


def require_node() -> None:
    """Skip, with the reason, where Directus cannot run."""
    if os.environ.get("PROCESSOR_SKIP_DIRECTUS") == "1":
        pytest.skip("PROCESSOR_SKIP_DIRECTUS=1: the real-Directus tests are skipped")
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: cannot run Directus")


def create_database(prefix: str) -> tuple[str, str]:
    """A new empty database on the server under test: (name, URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name, _with_database(ADMIN_URL, name)


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def script_env(admin_token: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of scripts/directus.sh: a generated login, KEY and SECRET."""
    env = dict(os.environ)
    env.update(
        DIRECTUS_ADMIN_EMAIL=f"admin-{secrets.token_hex(4)}@example.com",
        DIRECTUS_ADMIN_PASSWORD=secrets.token_urlsafe(18),
        DIRECTUS_ADMIN_TOKEN=admin_token,
        DIRECTUS_KEY=secrets.token_hex(16),
        DIRECTUS_SECRET=secrets.token_hex(32),
    )
    env.update(extra or {})
    return env


def apply_snapshot(database_url: str, admin_token: str) -> None:
    """Bootstrap `database_url` with Directus and apply the snapshot (installs if needed)."""
    try:
        done = subprocess.run(
            ["bash", str(SCRIPT), "apply", database_url],
            env=script_env(admin_token),
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/directus.sh apply took over {exc.timeout} s")
    if done.returncode != 0:
        pytest.fail(
            "scripts/directus.sh apply failed (set PROCESSOR_SKIP_DIRECTUS=1 to skip the "
            f"real-Directus tests where the npm registry is unreachable):\n{done.stderr[-4000:]}"
        )


def wait_until(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy (returned) or fail at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not true after {timeout_s} s: {getattr(predicate, '__name__', '')}")
        time.sleep(interval_s)


def request(
    method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 30
) -> tuple[int, Any]:
    """One JSON request: (HTTP status, decoded body or None)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        with exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None


class DirectusServer:
    """A Directus server process over one database; stop() and start() keep the port."""

    def __init__(
        self,
        database_url: str,
        admin_token: str,
        log_path: Path,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.admin_token = admin_token
        self.log_path = log_path
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # One KEY and SECRET for the server's life: a login's token survives a restart.
        self._env = script_env(admin_token, env)
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        """A request to `path` (e.g. "/items/stages"); no token means the public role."""
        return request(method, self.url(path), body, token)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """A request as the administrator that must succeed: the body's `data`."""
        status, answer = self.request(method, path, body, self.admin_token)
        assert status in (200, 204), (method, path, status, answer)
        return None if answer is None else answer.get("data")

    def create_user(
        self,
        role: str | None,
        *,
        email: str | None = None,
        password: str | None = None,
        token: str | None = None,
    ) -> str:
        """A user of `role` (a role id; None: no role), with a password to log in with
        and/or a static token; its id."""
        body: dict[str, Any] = {"role": role, "status": "active", "email_notifications": False}
        if email is not None:
            body["email"] = email
        if password is not None:
            body["password"] = password
        if token is not None:
            body["token"] = token
        user = self.admin("POST", "/users", body)
        return str(user["id"])

    def login(self, email: str, password: str) -> str:
        """An access token as the Studio gets one (POST /auth/login)."""
        status, body = self.request("POST", "/auth/login", {"email": email, "password": password})
        assert status == 200, (status, body)
        return str(body["data"]["access_token"])

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the server and wait until `/server/health` answers 200."""
        assert not self.running, "already running"
        env = dict(self._env)
        env["DIRECTUS_PORT"] = str(self.port)
        env.setdefault("DIRECTUS_LOG_LEVEL", "warn")
        with self.log_path.open("a") as log:
            self._process = subprocess.Popen(
                ["bash", str(SCRIPT), "cli", self.database_url, "start"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                pytest.fail(f"Directus exited with {self._process.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                status, _ = request("GET", self.url("/server/health"), timeout=5)
                if status == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"Directus did not answer in {timeout_s} s:\n{self.log()}")
            time.sleep(0.3)

    def stop(self) -> None:
        """SIGTERM to the whole process group (SIGKILL after 20 s); idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)

    def log(self) -> str:
        return self.log_path.read_text()[-8000:] if self.log_path.exists() else ""


def apply_access(
    server: DirectusServer, dispatcher_token: str | None, *, dry_run: bool = False
) -> Outcome:
    """`processor directus apply` against `server`: roles, permissions, the dispatcher's
    user (with `dispatcher_token`) and Flows."""

    async def go() -> Outcome:
        async with AdminClient(server.base_url, SecretStr(server.admin_token)) as client:
            return await apply(
                client,
                dispatcher_token=None if dispatcher_token is None else SecretStr(dispatcher_token),
                dry_run=dry_run,
            )

    return asyncio.run(go())


@dataclass(frozen=True)
class SnapshotDatabase:
    """A scratch database bootstrapped by Directus with the snapshot applied."""

    name: str
    url: str
    admin_token: str


@contextlib.contextmanager
def snapshot_database(prefix: str = "processor_dx") -> Iterator[SnapshotDatabase]:
    """Skips without Node; yields the database; drops it afterwards."""
    require_node()
    token = secrets.token_urlsafe(24)
    name, url = create_database(prefix)
    try:
        apply_snapshot(url, token)
        yield SnapshotDatabase(name, url, token)
    finally:
        drop_database(name)


@contextlib.contextmanager
def running_directus(
    workdir: Path, *, env: Mapping[str, str] | None = None, prefix: str = "processor_dx"
) -> Iterator[DirectusServer]:
    """A started Directus over a fresh snapshot database; stopped and dropped afterwards."""
    with snapshot_database(prefix) as db:
        server = DirectusServer(db.url, db.admin_token, workdir / "directus.log", env=env)
        try:
            server.start()
            yield server
        finally:
            server.stop()
