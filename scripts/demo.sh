#!/usr/bin/env bash
# The processor fed by the built-in simulator, with a live view: installs what it needs
# first (scripts/bootstrap.sh), then runs `processor demo` with any arguments given here.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh
exec .venv/bin/processor demo "$@"
