#!/usr/bin/env bash
# Starts a throw-away PostgreSQL cluster on loopback for the tests (Debian's `postgresql`
# package; installed here when missing) and prints the URL to use, e.g.
#   export SWITCHBOARD_TEST_POSTGRES_URL=$(bash tests/postgres/start.sh)
# Idempotent: a cluster already running in the same directory is reused.
# Usage: start.sh [DIR] [PORT]    (defaults: /tmp/switchboard-pg, 55432)
set -euo pipefail
dir=${1:-/tmp/switchboard-pg}
port=${2:-55432}
log() { printf '%s\n' "$*" >&2; }

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bindir" ]; then
  log "installing postgresql"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if ! as_pg "$bindir/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
  if [ ! -s "$dir/PG_VERSION" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    as_pg "$bindir/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 --no-sync >&2
  fi
  # Durability stays on (fsync, synchronous_commit): the tests and benchmarks measure real commits.
  as_pg "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=300" >&2
fi
psql() { as_pg "$bindir/psql" -h "$dir" -p "$port" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(psql -d postgres -c "SELECT 1 FROM pg_roles WHERE rolname = 'switchboard'")" != 1 ]; then
  psql -d postgres -c "CREATE ROLE switchboard LOGIN PASSWORD 'switchboard'"
fi
if [ "$(psql -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'switchboard'")" != 1 ]; then
  # CREATE DATABASE cannot share one -c with other statements.
  psql -d postgres -c "CREATE DATABASE switchboard OWNER switchboard"
fi
echo "postgres://switchboard:switchboard@127.0.0.1:$port/switchboard"
