"""Real `processor run` subprocesses for fault tests: start, kill, wait, read their logs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

from processor.core.settings import Settings


def settings_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment that makes a child process load exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSOR_")}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"PROCESSOR_{name.upper()}"] = str(value)
    env.update({f"PROCESSOR_{k.upper()}": v for k, v in overrides.items()})
    return env


class ProcessorProcess:
    """One `python -m processor run` child with its own log file."""

    def __init__(self, settings: Settings, *args: str, **overrides: str) -> None:
        self.env = settings_env(settings, **overrides)
        self.args = args
        self.log = Path(tempfile.mkstemp(prefix="processor-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ProcessorProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "processor", "run", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.alive():
            self.kill9()
        self.log.unlink(missing_ok=True)


def wait_for(predicate: object, timeout: float, interval: float = 0.05) -> bool:
    """Poll a zero-argument callable until it returns true or the timeout passes."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
