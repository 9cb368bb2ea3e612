#!/bin/sh
# Entrypoint of the test suite's PostgreSQL 18 + pgvector image (built by tools/standin_images.py).
#
# It honours the part of the official postgres image's documented contract (the "Environment
# Variables", "Initialization scripts" and "Arbitrary --user Notes" sections of its documentation)
# that this project relies on:
#   - POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (setting both is an error), read while still root,
#     so a root-owned 0400 file works; POSTGRES_USER (default postgres); POSTGRES_DB (default
#     POSTGRES_USER); POSTGRES_INITDB_ARGS; POSTGRES_HOST_AUTH_METHOD (default scram-sha-256);
#   - PGDATA (the image sets /var/lib/postgresql/18/docker, under the declared volume);
#   - on an empty PGDATA only: initdb, a `host all all all <method>` line in pg_hba.conf, a temporary
#     server started with the container's own flags but listening on its socket only, the database
#     created, every /docker-entrypoint-initdb.d/*.sql (psql, ON_ERROR_STOP) and *.sh (run if
#     executable, sourced otherwise) processed in name order, then the temporary server stopped;
#   - the server always runs as the `postgres` user, started with the container's command.
# Differences: the socket is in /tmp (the compiled default of the binaries used) rather than
# /var/run/postgresql; nothing here depends on its location.
# Not implemented (the project does not use them): *.sql.gz/xz/zst init files, POSTGRES_INITDB_WALDIR.
set -eu

file_env() {
  # file_env VAR: VAR from the environment, or from the file VAR_FILE names; never both.
  var=$1
  eval "value=\${$var:-}"
  eval "file=\${${var}_FILE:-}"
  if [ -n "$value" ] && [ -n "$file" ]; then
    echo "error: both $var and ${var}_FILE are set (but are exclusive)" >&2
    exit 1
  fi
  if [ -n "$file" ]; then
    value=$(cat "$file")
  fi
  export "$var=$value"
  unset "${var}_FILE"
}

case "${1:-}" in
  -*) set -- postgres "$@" ;;
esac

if [ "${1:-}" != postgres ]; then
  exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
  file_env POSTGRES_PASSWORD
  mkdir -p "$PGDATA"
  chmod 00700 "$PGDATA"
  chown -R postgres:postgres "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
file_env POSTGRES_PASSWORD
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    echo "error: database is uninitialized and superuser password is not specified" >&2
    exit 1
  fi
  ls /docker-entrypoint-initdb.d/ > /dev/null
  pwfile=$(mktemp)
  printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as in the official image
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" ${POSTGRES_INITDB_ARGS:-}
  rm -f "$pwfile"
  printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"

  # The temporary server gets the container's own flags, but listens on its socket only.
  shift
  options=""
  for arg in "$@"; do
    options="$options '$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")'"
  done
  pg_ctl -D "$PGDATA" -o "$options -c listen_addresses='' -p ${PGPORT:-5432}" -w start
  export PGPASSWORD="$POSTGRES_PASSWORD"
  psql="psql -v ON_ERROR_STOP=1 --username $POSTGRES_USER --no-password --no-psqlrc"
  if [ "$POSTGRES_DB" != postgres ]; then
    $psql --dbname postgres --set db="$POSTGRES_DB" <<'SQL'
CREATE DATABASE :"db";
SQL
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then
          echo "$0: running $f"
          "$f"
        else
          echo "$0: sourcing $f"
          # shellcheck disable=SC1090
          . "$f"
        fi
        ;;
      *.sql) echo "$0: running $f"; $psql --dbname "$POSTGRES_DB" -f "$f" ;;
      *) echo "$0: ignoring $f" ;;
    esac
  done
  unset PGPASSWORD
  pg_ctl -D "$PGDATA" -m fast -w stop
  echo "PostgreSQL init process complete; ready for start up."
  set -- postgres "$@"
fi

exec "$@"
