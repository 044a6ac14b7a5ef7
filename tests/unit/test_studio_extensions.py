"""The Studio's extensions (directus/extensions/processor-studio): their time arithmetic, and
that the committed bundle is the build of the committed source.

The formatting and parsing rules run under Node's own test runner (`node --test`): skipped,
with the reason, where Node is missing. The bundle check rebuilds the extension with the
extensions SDK of the pinned Directus install (scripts/directus.sh install), where it exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1].parent
EXTENSION = ROOT / "directus" / "extensions" / "processor-studio"
LOCK = ROOT / "directus" / "package-lock.json"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the extensions' tests run under node --test")
    return node


def test_time_rules_under_node() -> None:
    node = _node()
    done = subprocess.run(
        [node, "--test", "src/shared/"],
        cwd=EXTENSION,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout
    assert "# pass 0" not in done.stdout


def _directus_install() -> Path:
    cache = os.environ.get("PROCESSOR_DIRECTUS_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "processor-directus"
    )
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:12]
    path = Path(cache) / f"directus-{digest}"
    if not (path / ".complete").exists():
        pytest.skip(f"Directus is not installed ({path}): scripts/directus.sh install")
    return path


def test_the_committed_bundle_is_built_from_the_source(tmp_path: Path) -> None:
    node = _node()
    sdk = _directus_install() / "node_modules" / "@directus" / "extensions-sdk" / "cli.js"
    copy = tmp_path / "processor-studio"
    shutil.copytree(EXTENSION, copy, ignore=shutil.ignore_patterns("dist", "node_modules"))
    done = subprocess.run(
        [node, str(sdk), "build", "--no-minify"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("app.js", "api.js"):
        built = (copy / "dist" / name).read_text()
        committed = (EXTENSION / "dist" / name).read_text()
        assert built == committed, f"dist/{name} is stale: run scripts/directus.sh build-extensions"
