#!/usr/bin/env bash
# A local Directus with the project's schema, for development and tests.
#
#   scripts/directus.sh install                     install the pinned Directus (directus/package-lock.json)
#   scripts/directus.sh apply    DATABASE_URL       bootstrap the database, apply directus/snapshot.yaml
#   scripts/directus.sh start    DATABASE_URL       apply, then run the server on 127.0.0.1 (foreground)
#   scripts/directus.sh snapshot DATABASE_URL FILE  write the database's schema snapshot (YAML) to FILE
#   scripts/directus.sh cli      DATABASE_URL ARGS  any other `directus` command
#   scripts/directus.sh build-extensions            rebuild directus/extensions/*/dist from source
#
# The server loads the Studio's extensions from the repo's directus/extensions (their built
# dist/ is committed, so no build step is needed to run; rebuild after changing their source).
#
# DATABASE_URL is an existing PostgreSQL database (postgresql://user[:pass]@host:port/name);
# create it first (`createdb -h 127.0.0.1 -U postgres directus_dev`). `apply` is idempotent:
# system tables and the admin user are created only on a fresh database.
#
# Directus is installed with `npm ci` into a cache folder outside the repo, one folder per lock
# file, so later runs on the same machine skip the install (a cold install takes minutes):
#   PROCESSOR_DIRECTUS_CACHE  default ${XDG_CACHE_HOME:-$HOME/.cache}/processor-directus
#
# No secret lives in the repo. KEY, SECRET, ADMIN_EMAIL, ADMIN_PASSWORD and ADMIN_TOKEN are
# taken from these variables when set, otherwise generated at run time:
#   DIRECTUS_KEY DIRECTUS_SECRET DIRECTUS_ADMIN_EMAIL DIRECTUS_ADMIN_PASSWORD DIRECTUS_ADMIN_TOKEN
# `start` prints the generated admin login (a local development server only).
#   DIRECTUS_HOST (default 127.0.0.1), DIRECTUS_PORT (default 8055), DIRECTUS_LOG_LEVEL (warn)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PKG_DIR="$ROOT/directus"
SNAPSHOT="$PKG_DIR/snapshot.yaml"
EXTENSIONS="$PKG_DIR/extensions"
CACHE="${PROCESSOR_DIRECTUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/processor-directus}"

log() { printf '\033[1;35m[directus]\033[0m %s\n' "$*" >&2; }
die() { printf '[directus] error: %s\n' "$*" >&2; exit 1; }

RUN_DIRS=()
cleanup() { [ ${#RUN_DIRS[@]} -eq 0 ] || rm -rf "${RUN_DIRS[@]}"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

install_dir() {
  local digest
  digest="$(sha256sum "$PKG_DIR/package-lock.json" | cut -c1-12)"
  printf '%s/directus-%s\n' "$CACHE" "$digest"
}

cmd_install() {
  command -v node >/dev/null || die "node is not installed (Node 18+ is needed)"
  command -v npm >/dev/null || die "npm is not installed"
  local dir tmp
  dir="$(install_dir)"
  if [ -f "$dir/.complete" ]; then
    printf '%s\n' "$dir"
    return
  fi
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9
  if [ ! -f "$dir/.complete" ]; then
    local version
    version="$(node -p 'require(process.argv[1]).dependencies.directus' "$PKG_DIR/package.json")"
    # Fail fast when the registry does not answer (npm ci alone retries for minutes).
    npm view "directus@$version" version --prefer-online --fetch-retries=1 \
      --fetch-timeout=30000 --loglevel=error >/dev/null \
      || die "the npm registry does not answer: cannot install Directus $version"
    log "installing Directus $version into $dir (npm ci; a cold install takes a few minutes)"
    rm -rf "$dir"
    tmp="$(mktemp -d "$CACHE/.install.XXXXXX")"
    cp "$PKG_DIR/package.json" "$PKG_DIR/package-lock.json" "$tmp/"
    # Install scripts run only for the native modules the server loads: isolated-vm is compiled
    # here (its prebuilt binary is not on the npm registry); sqlite3 and oracledb would compile
    # drivers this PostgreSQL-only setup never loads, for a minute or more.
    if ! (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2 \
      && npm rebuild isolated-vm argon2 sharp --loglevel=error >&2); then
      rm -rf "$tmp"
      die "npm ci failed (is the npm registry reachable?)"
    fi
    touch "$tmp/.complete"
    mv "$tmp" "$dir"
  fi
  exec 9>&-
  printf '%s\n' "$dir"
}

# Runs the Directus CLI (bypassing the `directus` wrapper's online update check) in a scratch
# working directory, so no `.env` or `uploads/` of the caller is picked up; extensions come from
# the repo's directus/extensions (Directus only reads them).
directus() {
  local dir run status
  dir="$(cmd_install)"
  run="$(mktemp -d "${TMPDIR:-/tmp}/processor-directus-run.XXXXXX")"
  RUN_DIRS+=("$run")
  mkdir -p "$run/uploads"
  printf '{"name": "processor-directus-run", "private": true}\n' >"$run/package.json"
  set +e
  (
    cd "$run"
    export DB_CLIENT=pg
    export DB_CONNECTION_STRING="$DATABASE_URL"
    export KEY="$DIRECTUS_KEY" SECRET="$DIRECTUS_SECRET"
    export ADMIN_EMAIL="$DIRECTUS_ADMIN_EMAIL" ADMIN_PASSWORD="$DIRECTUS_ADMIN_PASSWORD"
    export ADMIN_TOKEN="$DIRECTUS_ADMIN_TOKEN"
    export CONFIG_PATH="$run/.env" EXTENSIONS_PATH="$EXTENSIONS"
    export STORAGE_LOCAL_ROOT="$run/uploads"
    export TELEMETRY=false LOG_LEVEL="${DIRECTUS_LOG_LEVEL:-warn}"
    export HOST="${DIRECTUS_HOST:-127.0.0.1}" PORT="${DIRECTUS_PORT:-8055}"
    export PUBLIC_URL="http://${HOST}:${PORT}"
    exec node "$dir/node_modules/@directus/api/dist/cli/run.js" "$@"
  )
  status=$?
  set -e
  return "$status"
}

installed() {
  # `schema apply` on a database without system tables logs an error and exits 0: check first.
  local dir
  dir="$(cmd_install)"
  (
    cd "$dir"
    # shellcheck disable=SC2016  # $1 is a SQL parameter, not a shell expansion
    DATABASE_URL="$DATABASE_URL" node --input-type=module -e '
      import pg from "pg";
      const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
      await client.connect();
      const r = await client.query("SELECT to_regclass($1) IS NOT NULL AS ok", ["directus_collections"]);
      await client.end();
      process.exit(r.rows[0].ok ? 0 : 1);
    '
  )
}

cmd_apply() {
  log "bootstrapping $(redacted "$DATABASE_URL")"
  directus bootstrap
  installed || die "Directus system tables are missing after bootstrap"
  log "applying $(basename "$SNAPSHOT")"
  directus schema apply --yes "$SNAPSHOT"
}

# Builds each extension of directus/extensions with the extensions SDK of the pinned Directus
# install (@directus/extensions-sdk is part of its locked tree: no other download).
cmd_build_extensions() {
  local dir sdk ext
  dir="$(cmd_install)"
  sdk="$dir/node_modules/@directus/extensions-sdk/cli.js"
  [ -f "$sdk" ] || die "the Directus install has no extensions SDK ($sdk)"
  for ext in "$EXTENSIONS"/*/; do
    [ -f "$ext/package.json" ] || continue
    log "building $(basename "$ext")"
    (cd "$ext" && node "$sdk" build --no-minify >&2)
  done
}

redacted() { printf '%s' "$1" | sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#'; }

main() {
  local command="${1:-}"
  [ -n "$command" ] || die "usage: scripts/directus.sh install|apply|start|snapshot|cli|build-extensions [DATABASE_URL] …"
  shift
  if [ "$command" = install ]; then
    cmd_install
    return
  fi
  if [ "$command" = build-extensions ]; then
    cmd_build_extensions
    return
  fi
  [ $# -ge 1 ] || die "$command needs a DATABASE_URL"
  DATABASE_URL="$1"
  shift
  local generated_login=0
  DIRECTUS_KEY="${DIRECTUS_KEY:-$(random_hex 16)}"
  DIRECTUS_SECRET="${DIRECTUS_SECRET:-$(random_hex 32)}"
  DIRECTUS_ADMIN_TOKEN="${DIRECTUS_ADMIN_TOKEN:-}"
  if [ -z "${DIRECTUS_ADMIN_EMAIL:-}" ] || [ -z "${DIRECTUS_ADMIN_PASSWORD:-}" ]; then
    generated_login=1
    DIRECTUS_ADMIN_EMAIL="${DIRECTUS_ADMIN_EMAIL:-admin-$(random_hex 4)@example.com}"
    DIRECTUS_ADMIN_PASSWORD="${DIRECTUS_ADMIN_PASSWORD:-$(random_hex 12)}"
  fi
  case "$command" in
    apply) cmd_apply ;;
    start)
      cmd_apply
      if [ "$generated_login" = 1 ]; then
        log "admin login on a fresh database: $DIRECTUS_ADMIN_EMAIL / $DIRECTUS_ADMIN_PASSWORD"
      fi
      log "starting on http://${DIRECTUS_HOST:-127.0.0.1}:${DIRECTUS_PORT:-8055}"
      DIRECTUS_LOG_LEVEL="${DIRECTUS_LOG_LEVEL:-info}" directus start
      ;;
    snapshot)
      [ $# -ge 1 ] || die "snapshot needs a FILE"
      local file
      file="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
      directus schema snapshot --yes --format yaml "$file"
      ;;
    cli) directus "$@" ;;
    *) die "unknown command: $command" ;;
  esac
}

main "$@"
