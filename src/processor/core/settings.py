"""Settings from the environment (`PROCESSOR_*`), validated once at start."""

from __future__ import annotations

import os
import socket
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PositiveInt = Annotated[int, Field(gt=0)]


def default_consumer_name() -> str:
    """Host name + pid: unique per process, stable for its lifetime."""
    return f"{socket.gethostname()}-{os.getpid()}"


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Settings(BaseSettings):
    """Every knob of the processor; see docs/configuration.md for the table."""

    model_config = SettingsConfigDict(
        env_prefix="PROCESSOR_", extra="ignore", frozen=True, validate_default=True
    )

    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/processor")
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")

    stream: str = Field("telemetry:positions", min_length=1)
    group: str = Field("processor", min_length=1)
    consumer: str = Field(default_factory=default_consumer_name, min_length=1)
    dlq_stream: str = ""
    notice_stream: str = ""
    notices_enabled: bool = True
    notice_maxlen: PositiveInt = 100_000
    dlq_maxlen: PositiveInt = 1_000_000

    domain_group: str = Field("domain", min_length=1)
    domain_read_count: PositiveInt = 100
    domain_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    config_refresh_s: Annotated[float, Field(gt=0)] = 10.0
    domain_tick_s: Annotated[float, Field(gt=0)] = 5.0
    domain_batch_interval_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    domain_retry_attempts: Annotated[int, Field(ge=1, le=1000)] = 20
    backfill_rate: Annotated[float, Field(ge=0)] = 2000.0
    backfill_batch: Annotated[int, Field(ge=1, le=100_000)] = 1000

    read_count: PositiveInt = 1000
    block_ms: PositiveInt = 1000
    claim_idle_ms: PositiveInt = 60_000
    claim_interval_ms: PositiveInt = 5_000
    max_deliveries: PositiveInt = 5

    batch_max_rows: PositiveInt = 5000
    batch_max_age_ms: PositiveInt = 100
    batches_in_flight: Annotated[int, Field(ge=1, le=16)] = 2
    write_method: Literal["copy", "unnest"] = "copy"

    state_max_devices: PositiveInt = 100_000
    dedupe_window: PositiveInt = 200_000
    max_future_s: Annotated[int, Field(ge=0)] = 300
    correct_week_rollover: bool = False
    max_implied_speed_kmh: PositiveInt = 400

    db_pool_size: Annotated[int, Field(ge=1, le=64)] = 4
    db_statement_timeout_ms: PositiveInt = 30_000
    db_connect_timeout_s: PositiveInt = 5
    retry_initial_ms: PositiveInt = 100
    retry_max_ms: PositiveInt = 10_000

    database_mode: Literal["auto", "timescale", "citus", "plain"] = "auto"
    timescale_chunk_interval: str = "1 day"
    timescale_compress_after: str = "7 days"
    timescale_retention: str = ""
    timescale_own_policies: bool = False
    timescale_jobs_sample_s: Annotated[float, Field(ge=0)] = 60.0
    # Citus (docs/scaling.md): shards of positions at the first migrate; connections to
    # each worker a processor session keeps open between statements.
    citus_shard_count: Annotated[int, Field(ge=1, le=1024)] = 8
    citus_cached_connections: Annotated[int, Field(ge=0, le=64)] = 16

    directus_url: str = ""
    directus_token: SecretStr = SecretStr("")
    dispatch_enabled: bool = True
    dispatch_batch: Annotated[int, Field(ge=1, le=5000)] = 500
    dispatch_poll_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    dispatch_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    outbox_retention_s: Annotated[int, Field(ge=0)] = 86_400
    # The live feed for gateways (`<stream>:live`, docs/operations.md "The live gateway").
    live_enabled: bool = False
    live_stream: str = ""
    live_maxlen: Annotated[int, Field(ge=100)] = 100_000
    gateway_host: str = "127.0.0.1"
    gateway_port: Annotated[int, Field(ge=0, le=65535)] = 9120
    gateway_race_control_token: SecretStr = SecretStr("")
    gateway_public_token: SecretStr = SecretStr("")
    gateway_interval_ms: Annotated[int, Field(ge=50, le=10_000)] = 500
    gateway_max_devices: Annotated[int, Field(ge=1)] = 20_000
    gateway_client_queue: Annotated[int, Field(ge=1)] = 1_000
    gateway_max_clients: Annotated[int, Field(ge=1)] = 5_000
    gateway_directus_url: str = ""

    shutdown_timeout_s: PositiveInt = 20
    http_enabled: bool = True
    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=0, le=65535)] = 9108
    ready_stall_s: PositiveInt = 30

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_rejections_per_s: Annotated[float, Field(ge=0)] = 5.0

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("directus_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL (or empty: no dispatcher)")
        return value.rstrip("/")

    @property
    def dispatching(self) -> bool:
        """Whether `run --with-domain` and `domain` also deliver the outbox (to Directus,
        and to the live stream when `live_enabled`)."""
        return self.dispatch_enabled and (bool(self.directus_url) or self.live_enabled)

    @property
    def live_key(self) -> str:
        """The stream the dispatcher publishes each delivery to, for gateways."""
        return self.live_stream or f"{self.stream}:live"

    @model_validator(mode="after")
    def _derived_keys(self) -> Settings:
        if not self.dlq_stream:
            object.__setattr__(self, "dlq_stream", f"{self.stream}:dlq")
        if not self.notice_stream:
            object.__setattr__(self, "notice_stream", f"{self.stream}:committed")
        if self.directus_url and not self.directus_token.get_secret_value():
            raise ValueError("PROCESSOR_DIRECTUS_URL is set: PROCESSOR_DIRECTUS_TOKEN is required")
        if self.block_ms >= self.claim_idle_ms:
            raise ValueError("PROCESSOR_BLOCK_MS must be shorter than PROCESSOR_CLAIM_IDLE_MS")
        return self

    @property
    def socket_timeout_s(self) -> float:
        """Longer than the blocking read, so a quiet stream is never mistaken for a dead socket."""
        return self.block_ms / 1000 + 10.0

    def redacted(self) -> dict[str, Any]:
        """Effective settings safe to print or log."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and name.endswith("_url"):
                value = redact_url(value.get_secret_value())
            elif isinstance(value, SecretStr):  # a token: never shown
                value = "***" if value.get_secret_value() else ""
            out[f"PROCESSOR_{name.upper()}"] = value
        return out


class SettingsError(Exception):
    """Invalid configuration: one line per bad value, naming the variable."""


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with every problem reported at once."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = "_".join(str(part) for part in error["loc"]) or "settings"
            name = f"PROCESSOR_{loc.upper()}" if loc != "settings" else "settings"
            shown = ""
            if "url" not in loc and error.get("input") is not None and error["type"] != "missing":
                shown = f" (got {str(error['input'])[:60]!r})"
            lines.append(f"{name}: {error['msg']}{shown}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
