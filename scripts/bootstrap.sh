#!/usr/bin/env bash
# Installs what the processor needs on a fresh machine: a virtual environment with the
# locked packages, and local PostgreSQL and Redis when none answer. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION="0.13.9"
PY="${PYTHON:-python3}"

log() { printf '\033[1;34m[bootstrap]\033[0m %s\n' "$*" >&2; }

"$PY" - <<'PYCHECK' || { echo "Python 3.11+ is required" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PYCHECK

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
if [ ! -x .venv/bin/uv ] || [ "$(.venv/bin/uv --version | awk '{print $2}')" != "$UV_VERSION" ]; then
  log "installing uv $UV_VERSION"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
log "syncing locked dependencies (uv.lock)"
UV_PROJECT_ENVIRONMENT=.venv .venv/bin/uv sync --locked --all-extras --inexact --quiet

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  log "installing $* with apt-get"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

if ! port_open 5432; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql
  fi
  version="$(ls /etc/postgresql | sort -V | tail -1)"
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  conf="/etc/postgresql/$version/main/pg_hba.conf"
  if ! as_root grep -q '^host all all 127.0.0.1/32 trust' "$conf"; then
    log "allowing trust auth on loopback for local development"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$conf"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
  for _ in $(seq 1 30); do port_open 5432 && break; sleep 1; done
  port_open 5432 || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
fi

if ! port_open 6379; then
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting Redis"
  mkdir -p /tmp/processor-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/processor-redis --logfile /tmp/processor-redis/redis.log
  for _ in $(seq 1 30); do port_open 6379 && break; sleep 0.5; done
  port_open 6379 || { echo "Redis did not start on 127.0.0.1:6379" >&2; exit 1; }
fi
log "ready: .venv, PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379"
