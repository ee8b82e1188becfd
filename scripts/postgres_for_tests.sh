#!/usr/bin/env bash
# Start a private PostgreSQL server for the tests (installing it from Debian's packages if missing),
# unless it is running already, and print its URL: the tests of `spikerl tune` through a database
# read it from SPIKERL_TEST_POSTGRES_URL.
#   export SPIKERL_TEST_POSTGRES_URL=$(bash scripts/postgres_for_tests.sh)
# The server listens on 127.0.0.1 only, port $PGPORT (default 54329), data in $PGDATA_DIR (default
# /tmp/spikerl-postgres), trust authentication: a throwaway server for tests, not for studies.
set -euo pipefail
PORT=${PGPORT:-54329}
DATA=${PGDATA_DIR:-/tmp/spikerl-postgres}
DB=spikerl_test
URL="postgresql://postgres@127.0.0.1:${PORT}/${DB}"

bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
if [ -z "$(bin_dir)" ]; then
    echo "installing PostgreSQL from Debian's packages" >&2
    if [ "$(id -u)" = 0 ]; then apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    else sudo apt-get update -qq >&2 && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2; fi
fi
BIN=$(bin_dir)
[ -n "$BIN" ] || { echo "PostgreSQL is not installed and could not be installed" >&2; exit 1; }

# The server refuses to run as root: run it as the postgres user then.
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if ! "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    if [ ! -f "$DATA/PG_VERSION" ]; then
        mkdir -p "$DATA"
        [ "$(id -u)" = 0 ] && chown postgres "$DATA"
        as_owner "$BIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
    fi
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1" \
        start >&2
fi
if ! "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
    "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"
fi
echo "$URL"
