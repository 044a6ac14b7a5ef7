"""Settings: defaults that work locally, one clear line per bad value, no secret shown."""

from __future__ import annotations

import pytest

from processor.core.settings import SettingsError, load_settings, redact_url


def test_defaults_work_for_the_local_services() -> None:
    settings = load_settings()
    assert settings.stream == "telemetry:positions"
    assert settings.dlq_stream == "telemetry:positions:dlq"
    assert settings.notice_stream == "telemetry:positions:committed"
    assert settings.socket_timeout_s > settings.block_ms / 1000
    assert settings.http_host == "127.0.0.1"


def test_derived_keys_follow_the_stream() -> None:
    settings = load_settings(stream="s1")
    assert (settings.dlq_stream, settings.notice_stream) == ("s1:dlq", "s1:committed")


def test_every_bad_value_is_reported_with_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_BATCH_MAX_ROWS", "-1")
    monkeypatch.setenv("PROCESSOR_LOG_FORMAT", "xml")
    monkeypatch.setenv("PROCESSOR_REDIS_URL", "http://user:hunter2@example.invalid")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "PROCESSOR_BATCH_MAX_ROWS" in message
    assert "PROCESSOR_LOG_FORMAT" in message
    assert "PROCESSOR_REDIS_URL" in message
    assert "hunter2" not in message


def test_redacted_settings_hide_passwords() -> None:
    settings = load_settings(
        database_url="postgresql://proc:s3cret@db.example.invalid:5432/x",
        redis_url="rediss://default:t0ken@cache.example.invalid:6380/0",
    )
    shown = str(settings.redacted()) + repr(settings) + str(settings)
    assert "s3cret" not in shown
    assert "t0ken" not in shown
    assert "postgresql://proc:***@db.example.invalid:5432/x" in shown


def test_redact_url_without_password_is_unchanged() -> None:
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_block_must_be_shorter_than_claim_idle() -> None:
    with pytest.raises(SettingsError, match="BLOCK_MS"):
        load_settings(block_ms=5000, claim_idle_ms=1000)
