#!/usr/bin/env bash
# Local PostgreSQL for tests and `DATABASE_URL` runs: one cluster under var/pg, listening on
# 127.0.0.1 only, trust auth for loopback connections (a throw-away development database).
#
#   scripts/postgres.sh start    initdb if missing, start, create database "langerhans" (idempotent)
#   scripts/postgres.sh stop     stop the server (fast shutdown)
#   scripts/postgres.sh status   exit 0 when the server answers
#   scripts/postgres.sh url      print the connection URL
#
# PostgreSQL refuses to run as root, so when started by root the cluster is owned by and run
# as the `postgres` system user (Debian's package creates it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# As root the server runs as `postgres`, which may not be able to traverse the checkout's
# parent folders (mktemp -d makes them 0700), so the cluster then lives under /var/tmp,
# one per checkout.
if [[ "$(id -u)" == 0 ]]; then
    DEFAULT_PG_HOME="/var/tmp/langerhans-pg/$(printf '%s' "$ROOT" | sha1sum | cut -c1-12)"
else
    DEFAULT_PG_HOME="$ROOT/var/pg"
fi
PG_HOME="${LANGERHANS_PG_DIR:-$DEFAULT_PG_HOME}"
PG_DATA="$PG_HOME/data"
PG_RUN="$PG_HOME/run"
PG_LOG="$PG_HOME/postgres.log"
PG_PORT="${LANGERHANS_PG_PORT:-55432}"
PG_HOST=127.0.0.1
PG_DB=langerhans
PG_SUPERUSER=postgres

find_bindir() {
    if [[ -n "${PG_BINDIR:-}" ]]; then echo "$PG_BINDIR"; return; fi
    # Highest Debian-packaged major version first, then whatever is on PATH.
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$dir" && -x "$dir/initdb" ]]; then echo "$dir"; return; fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
    echo "postgres.sh: no PostgreSQL binaries found (install Debian's postgresql package)" >&2
    exit 1
}

BIN="$(find_bindir)"

# Run a server-side command as the cluster owner.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        # From /, which the postgres user can always enter (the checkout may not be).
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

url() { echo "postgresql://$PG_SUPERUSER@$PG_HOST:$PG_PORT/$PG_DB"; }

is_ready() {
    "$BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -d postgres -U "$PG_SUPERUSER"
}

psql_admin() {
    "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres "$@"
}

start() {
    if [[ "$(id -u)" == 0 ]] && ! id postgres >/dev/null 2>&1; then
        echo "postgres.sh: running as root needs the 'postgres' system user" >&2
        exit 1
    fi
    mkdir -p "$PG_HOME" "$PG_RUN"
    if [[ "$(id -u)" == 0 ]]; then
        chown postgres: "$PG_HOME" "$PG_RUN"
    fi
    if [[ ! -s "$PG_DATA/PG_VERSION" ]]; then
        echo "==> initdb $PG_DATA"
        rm -rf "$PG_DATA"
        if [[ "$(id -u)" == 0 ]]; then
            install -d -o postgres -g postgres -m 0700 "$PG_DATA"
        else
            install -d -m 0700 "$PG_DATA"
        fi
        as_owner "$BIN/initdb" -D "$PG_DATA" -U "$PG_SUPERUSER" --auth=trust \
            --encoding=UTF8 --locale=C.UTF-8 >"$PG_HOME/initdb.log" 2>&1 || {
            cat "$PG_HOME/initdb.log" >&2
            exit 1
        }
    fi
    if is_ready; then
        echo "==> PostgreSQL already running on $PG_HOST:$PG_PORT"
    else
        echo "==> starting PostgreSQL on $PG_HOST:$PG_PORT (log: $PG_LOG)"
        if [[ "$(id -u)" == 0 ]]; then
            touch "$PG_LOG" && chown postgres: "$PG_LOG"
        fi
        # -w waits until the server accepts connections (or fails with the log's reason).
        as_owner "$BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 \
            -o "-c listen_addresses=$PG_HOST -p $PG_PORT -k $PG_RUN" start >/dev/null || {
            tail -n 20 "$PG_LOG" >&2
            exit 1
        }
    fi
    if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]]; then
        echo "==> creating database $PG_DB"
        psql_admin -c "CREATE DATABASE $PG_DB"
    fi
    echo "==> ready: $(url)"
}

stop() {
    if [[ ! -s "$PG_DATA/postmaster.pid" ]]; then
        echo "==> PostgreSQL not running"
        return 0
    fi
    echo "==> stopping PostgreSQL"
    as_owner "$BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
}

status() {
    if is_ready; then
        echo "PostgreSQL running: $(url)"
    else
        echo "PostgreSQL not running"
        return 1
    fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
url) url ;;
*)
    echo "usage: $0 start|stop|status|url" >&2
    exit 2
    ;;
esac
