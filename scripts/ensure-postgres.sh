#!/usr/bin/env bash
# Makes the machine's Debian PostgreSQL usable for tests and prints a DATABASE_URL as the last line on stdout.
#
#   export DATABASE_URL="$(bash scripts/ensure-postgres.sh | tail -n 1)"
#
# Idempotent: installs `postgresql` with apt-get only if `pg_ctlcluster` is missing, creates the `main` cluster only
# if there is none, starts it only if it is down, and creates the role and database only if they do not exist.
# Must run as root (it does on developer machines and in CI). Everything but the URL goes to stderr.
#
# Overrides: AGENTPLANE_PG_USER, AGENTPLANE_PG_PASSWORD, AGENTPLANE_PG_DB (all default to "agentplane").
# The role gets CREATEDB (not SUPERUSER) so test/support/postgres.ts can create and drop a database per test file.
set -euo pipefail

PG_USER="${AGENTPLANE_PG_USER:-agentplane}"
PG_PASSWORD="${AGENTPLANE_PG_PASSWORD:-agentplane}"
PG_DB="${AGENTPLANE_PG_DB:-agentplane}"
CLUSTER=main

log() { echo "ensure-postgres: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ "$PG_USER" =~ ^[a-z_][a-z0-9_]*$ ]] || die "AGENTPLANE_PG_USER must be a plain lowercase identifier, got '$PG_USER'"
[[ "$PG_DB" =~ ^[a-z_][a-z0-9_]*$ ]] || die "AGENTPLANE_PG_DB must be a plain lowercase identifier, got '$PG_DB'"
[[ "$PG_PASSWORD" =~ ^[A-Za-z0-9_.~-]+$ ]] || die "AGENTPLANE_PG_PASSWORD may only contain [A-Za-z0-9_.~-] (it goes into a URL unescaped)"

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || die "pg_ctlcluster not found and not running as root; install it with: sudo apt-get install -y postgresql"
  log "pg_ctlcluster not found; installing postgresql with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2
  apt-get install -y --no-install-recommends postgresql >&2
fi

# Highest installed server version (Debian installs each under /usr/lib/postgresql/<major>).
VERSION="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -n | tail -n 1)"
[ -n "$VERSION" ] || die "no PostgreSQL server under /usr/lib/postgresql; install it with: apt-get install -y postgresql"

# Containers may be told not to create the default cluster on install (create_main_cluster = false).
if [ ! -d "/etc/postgresql/$VERSION/$CLUSTER" ]; then
  log "creating cluster $VERSION/$CLUSTER"
  pg_createcluster "$VERSION" "$CLUSTER" >&2
fi

# /run is a tmpfs on many machines: the socket directory may be gone after a reboot.
install -d -o postgres -g postgres -m 2775 /var/run/postgresql

if pg_ctlcluster "$VERSION" "$CLUSTER" status >/dev/null 2>&1; then
  log "cluster $VERSION/$CLUSTER already running"
else
  log "starting cluster $VERSION/$CLUSTER"
  pg_ctlcluster "$VERSION" "$CLUSTER" start >&2
fi

PORT="$(pg_conftool -s "$VERSION" "$CLUSTER" show port 2>/dev/null || echo 5432)"

for _ in $(seq 1 60); do
  pg_isready -q -h /var/run/postgresql -p "$PORT" && break
  sleep 0.5
done
pg_isready -q -h /var/run/postgresql -p "$PORT" \
  || die "cluster $VERSION/$CLUSTER does not accept connections; see /var/log/postgresql/postgresql-$VERSION-$CLUSTER.log"

as_postgres() {
  if command -v runuser >/dev/null 2>&1; then runuser -u postgres -- "$@"; else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi
}
psql_admin() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -d postgres "$@"; }

# The password is (re)set on every run so a changed AGENTPLANE_PG_PASSWORD takes effect.
psql_admin >&2 <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE "$PG_USER" LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  ELSE
    ALTER ROLE "$PG_USER" LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
END
\$\$;
SQL

if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != "1" ]; then
  log "creating database $PG_DB"
  psql_admin -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\""
fi

URL="postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PORT/$PG_DB"

# Prove the URL works over TCP with password auth, which is what the tests use.
PGPASSWORD="$PG_PASSWORD" psql -X -q -h 127.0.0.1 -p "$PORT" -U "$PG_USER" -d "$PG_DB" -tAc 'SELECT 1' >/dev/null \
  || die "cannot log in as $PG_USER over TCP on 127.0.0.1:$PORT (check pg_hba.conf of cluster $VERSION/$CLUSTER)"

log "PostgreSQL $(as_postgres psql -X -p "$PORT" -d postgres -tAc 'SHOW server_version') ready on 127.0.0.1:$PORT"
echo "$URL"
