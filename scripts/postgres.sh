#!/usr/bin/env bash
# Prints the URL of a PostgreSQL server the tests may create databases on,
# finding or starting one: $DATABASE_URL if it names PostgreSQL, else a server
# answering on 127.0.0.1:5432, else a throwaway cluster under target/pgdata
# started with the system's initdb/pg_ctl, else PostgreSQL installed from the
# OS packages (as root). Fails loudly when none of these works.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "postgres.sh: $*" >&2; }

if [[ "${DATABASE_URL:-}" == postgres://* || "${DATABASE_URL:-}" == postgresql://* ]]; then
  echo "$DATABASE_URL"; exit 0
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if port_open 5432; then
  echo "postgres://postgres@127.0.0.1:5432/postgres"; exit 0
fi

PORT=55432
DATA="$PWD/target/pgdata"
find_bin() {
  command -v "$1" 2>/dev/null && return 0
  ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1 | grep . && return 0
  return 1
}

if port_open "$PORT"; then
  echo "postgres://postgres@127.0.0.1:$PORT/postgres"; exit 0
fi

if ! find_bin initdb >/dev/null || ! find_bin pg_ctl >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "no PostgreSQL found; installing it from the OS packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  else
    log "no PostgreSQL server on 127.0.0.1:5432, no initdb/pg_ctl, and cannot install one."
    log "Set DATABASE_URL=postgres://... or install PostgreSQL."
    exit 1
  fi
fi
INITDB=$(find_bin initdb); PG_CTL=$(find_bin pg_ctl)

# initdb refuses to run as root: the cluster belongs to an unprivileged user.
RUN=()
if [[ $(id -u) -eq 0 ]]; then
  OWNER=postgres
  id "$OWNER" >/dev/null 2>&1 || useradd --system --no-create-home "$OWNER"
  mkdir -p "$DATA"; chown "$OWNER" "$DATA"
  chmod o+x "$PWD" "$PWD/target" 2>/dev/null || true
  RUN=(runuser -u "$OWNER" --)
fi
if [[ ! -f "$DATA/PG_VERSION" ]]; then
  log "creating a throwaway cluster in $DATA"
  "${RUN[@]}" "$INITDB" -D "$DATA" -U postgres --auth=trust --no-sync >/dev/null
fi
log "starting the throwaway cluster on port $PORT"
"${RUN[@]}" "$PG_CTL" -D "$DATA" -l "$DATA/server.log" -w -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
echo "postgres://postgres@127.0.0.1:$PORT/postgres"
