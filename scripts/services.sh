#!/usr/bin/env bash
# Start or stop the project's own PostgreSQL and Redis on loopback, under var/.
#
#   scripts/services.sh start [--durable]   # --durable: fsync on (benchmarks); default is test speed
#   scripts/services.sh stop
#   scripts/services.sh restart-redis | stop-redis | start-redis
#   scripts/services.sh status              # exit 0 when both are up
#   scripts/services.sh env                 # print the URLs to export
#   scripts/services.sh pg-datadir          # print where the PostgreSQL cluster lives
#   scripts/services.sh start-pgbouncer | stop-pgbouncer   # PgBouncer, transaction pooling
#   scripts/services.sh start-replica | stop-replica       # a streaming replica (pg_basebackup)
#
# PostgreSQL refuses to run as root; as root the cluster runs as the 'postgres' system
# user (created by Debian's package). Ports: PG_PORT (54329) and REDIS_PORT (63799); the
# replica listens on REPLICA_PORT (PG_PORT + 10), PgBouncer on PGBOUNCER_PORT (PG_PORT + 20).
#
# The cluster lives in var/services/pg, unless we are root and the 'postgres' user cannot
# reach that folder (a checkout under /root, or any folder of mode 700 on the way): then
# initdb would fail with "Permission denied", so the cluster lives in
# /var/tmp/growth-pg-<hash of the folder>/pg instead, owned by postgres, one per checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VAR=$(realpath -m "${GROWTH_SERVICES_DIR:-$ROOT/var/services}")
PG_PORT=${PG_PORT:-54329}
REDIS_PORT=${REDIS_PORT:-63799}
REDIS_DIR=$VAR/redis
REPLICA_PORT=${REPLICA_PORT:-$((PG_PORT + 10))}
PGBOUNCER_PORT=${PGBOUNCER_PORT:-$((PG_PORT + 20))}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)

as_pg() {
  # From /: the postgres user may not be allowed into the current directory.
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

pg_data_dir() {
  if [ "$(id -u)" != 0 ] || [ -s "$VAR/pg/PG_VERSION" ] || ! id postgres >/dev/null 2>&1; then
    echo "$VAR/pg"; return
  fi
  # The nearest folder that exists: VAR and what is missing below it are created mode 755.
  local probe=$VAR
  while [ ! -e "$probe" ]; do probe=$(dirname "$probe"); done
  if (cd / && runuser -u postgres -- test -x "$probe") 2>/dev/null; then
    echo "$VAR/pg"
  else
    echo "/var/tmp/growth-pg-$(printf '%s' "$VAR" | sha256sum | cut -c1-12)/pg"
  fi
}
PG_DATA=$(pg_data_dir)

pg_start() {
  [ -n "$PG_BIN" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
  mkdir -p "$VAR"
  if [ ! -s "$PG_DATA/PG_VERSION" ]; then
    if [ "$PG_DATA" != "$VAR/pg" ]; then
      echo "The postgres user cannot enter $VAR (a folder on the way is private to root)," >&2
      echo "so the PostgreSQL cluster goes to $PG_DATA (remove it after 'scripts/services.sh stop')." >&2
      install -d -m 700 -o postgres -g postgres "$(dirname "$PG_DATA")"
    fi
    mkdir -p "$PG_DATA"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DATA"
    local pw; pw=$(mktemp); echo growth > "$pw"; chmod 644 "$pw"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U growth --pwfile="$pw" --auth-host=scram-sha-256 --auth-local=peer \
      -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pw"
  fi
  local fsync=off
  [ "${1:-}" = "--durable" ] && fsync=on
  if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 60 start -o \
      "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PG_DATA \
       -c max_connections=300 -c shared_buffers=1GB -c work_mem=64MB -c maintenance_work_mem=512MB \
       -c max_wal_size=8GB -c fsync=$fsync -c synchronous_commit=$fsync -c full_page_writes=$fsync \
       -c max_parallel_workers_per_gather=2 -c jit=off" >/dev/null
  fi
  if ! PGPASSWORD=growth "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U growth -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'growth'" | grep -q 1; then
    PGPASSWORD=growth "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U growth growth
  fi
  echo "PostgreSQL on 127.0.0.1:$PG_PORT"
}

pg_stop() {
  [ -s "$PG_DATA/PG_VERSION" ] || return 0
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
}

# --- Streaming replica --------------------------------------------------------------------
# A hot standby of the cluster above, cloned with pg_basebackup (-R writes standby.signal and
# primary_conninfo) over the replication connection initdb's pg_hba.conf allows from
# 127.0.0.1. Its max_connections must be at least the primary's (hot standby refuses less).
REPLICA_DATA=$(dirname "$PG_DATA")/pg-replica

replica_start() {
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || { echo "no PostgreSQL on 127.0.0.1:$PG_PORT (start it first)" >&2; exit 1; }
  if [ ! -s "$REPLICA_DATA/PG_VERSION" ]; then
    rm -rf "$REPLICA_DATA"
    mkdir -p "$REPLICA_DATA"; chmod 700 "$REPLICA_DATA"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$REPLICA_DATA"
    as_pg env PGPASSWORD=growth "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U growth \
      -D "$REPLICA_DATA" -R -X stream -c fast >/dev/null
  fi
  if ! as_pg "$PG_BIN/pg_ctl" -D "$REPLICA_DATA" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$REPLICA_DATA" -l "$REPLICA_DATA/server.log" -w -t 60 start -o \
      "-c listen_addresses=127.0.0.1 -c port=$REPLICA_PORT -c unix_socket_directories=$REPLICA_DATA \
       -c max_connections=300 -c shared_buffers=128MB -c hot_standby=on -c hot_standby_feedback=on \
       -c fsync=off -c jit=off" >/dev/null
  fi
  echo "PostgreSQL replica on 127.0.0.1:$REPLICA_PORT"
}

replica_stop() {
  [ -s "$REPLICA_DATA/PG_VERSION" ] || return 0
  as_pg "$PG_BIN/pg_ctl" -D "$REPLICA_DATA" -m fast -w stop >/dev/null 2>&1 || true
}

# --- PgBouncer ----------------------------------------------------------------------------
# Debian's pgbouncer in front of the cluster, transaction pooling: a server connection is
# lent to a client for one transaction. It runs as the cluster's user (it refuses root).
#
# Laid out as production runs it: on the database host, clients (gunicorn, the workers on
# other hosts) reach it over TCP and it reaches PostgreSQL over the server's unix socket
# (no TCP stack on its half of the hop; scram-sha-256 for 'growth' on that socket, a
# pg_hba.conf line added once), with PgBouncer's defaults otherwise: LIFO server connections
# (the most recently used one is lent first: warm caches), pkt_buf 4096 (a mark is ~200
# bytes), server_check_delay 30 s (a busy connection is never checked). server_reset_query
# is not used in transaction pooling. Per-connection log lines are off (log_connections,
# log_disconnections: a fleet of workers reconnecting is noise; errors are still logged).
# PGBOUNCER_ROUND_ROBIN=1 (tests/pgservers.py) lends idle server connections in turn
# instead, so that a client leaning on session state (prepared statements, advisory locks)
# fails at once in the tests. Starting it again rewrites the configuration and RELOADs it.
BOUNCER_DIR=$(dirname "$PG_DATA")/pgbouncer

pgbouncer_bin() { command -v pgbouncer 2>/dev/null || ls /usr/sbin/pgbouncer 2>/dev/null; }

pgbouncer_server() {
  # The cluster's unix socket when it has one (its path fits in sun_path: 107 bytes), else TCP.
  local socket="$PG_DATA/.s.PGSQL.$PG_PORT"
  if [ ${#socket} -le 107 ] && as_pg test -S "$socket"; then
    if ! grep -q '^local all growth scram-sha-256' "$PG_DATA/pg_hba.conf"; then
      # First match wins: before the 'local all all peer' line (peer would need an OS user 'growth').
      as_pg sed -i '0,/^local/s//local all growth scram-sha-256\n&/' "$PG_DATA/pg_hba.conf"
      as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" reload >/dev/null
    fi
    echo "host=$PG_DATA port=$PG_PORT"
  else
    echo "host=127.0.0.1 port=$PG_PORT"
  fi
}

pgbouncer_start() {
  local bin; bin=$(pgbouncer_bin) || { echo "PgBouncer is not installed (scripts/system-deps.sh)" >&2; exit 1; }
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || { echo "no PostgreSQL on 127.0.0.1:$PG_PORT (start it first)" >&2; exit 1; }
  mkdir -p "$BOUNCER_DIR"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$BOUNCER_DIR"
  # The password in the clear: pgbouncer then answers SCRAM itself and logs in to the server.
  echo '"growth" "growth"' > "$BOUNCER_DIR/userlist.txt"
  cat > "$BOUNCER_DIR/pgbouncer.ini" <<INI
[databases]
* = $(pgbouncer_server) connect_query='SELECT campaigns_delivery_prepare_mark()'

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir = $BOUNCER_DIR
pidfile = $BOUNCER_DIR/pgbouncer.pid
logfile = $BOUNCER_DIR/pgbouncer.log
auth_type = scram-sha-256
auth_file = $BOUNCER_DIR/userlist.txt
pool_mode = transaction
admin_users = growth
max_client_conn = 1000
default_pool_size = 40
max_db_connections = 100
server_reset_query =
server_round_robin = ${PGBOUNCER_ROUND_ROBIN:-0}
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = extra_float_digits
INI
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$BOUNCER_DIR"/*
  chmod 600 "$BOUNCER_DIR/userlist.txt"
  if PGPASSWORD=growth "$PG_BIN/psql" -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U growth -d pgbouncer -tAc "RELOAD" \
      >/dev/null 2>&1; then
    echo "PgBouncer on 127.0.0.1:$PGBOUNCER_PORT"; return
  fi
  # A port someone else listens on (another helper's PostgreSQL, with the same password) would
  # answer a "SELECT 1": only PgBouncer's admin console proves it is ours.
  if PGPASSWORD=growth "$PG_BIN/psql" -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U growth -d growth -tAc "SELECT 1" \
      >/dev/null 2>&1; then
    echo "port $PGBOUNCER_PORT is taken by another server (set PGBOUNCER_PORT)" >&2; exit 1
  fi
  as_pg "$bin" -d -q "$BOUNCER_DIR/pgbouncer.ini"
  for _ in $(seq 50); do
    PGPASSWORD=growth "$PG_BIN/psql" -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U growth -d pgbouncer -tAc "SHOW VERSION" \
      >/dev/null 2>&1 && { echo "PgBouncer on 127.0.0.1:$PGBOUNCER_PORT"; return; }
    sleep 0.1
  done
  echo "PgBouncer did not start on 127.0.0.1:$PGBOUNCER_PORT (see $BOUNCER_DIR/pgbouncer.log)" >&2; exit 1
}

pgbouncer_stop() {
  [ -s "$BOUNCER_DIR/pgbouncer.pid" ] || return 0
  local pid; pid=$(cat "$BOUNCER_DIR/pgbouncer.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$BOUNCER_DIR/pgbouncer.pid"
}

redis_start() {
  command -v redis-server >/dev/null || { echo "Redis is not installed (apt-get install redis-server)" >&2; exit 1; }
  mkdir -p "$REDIS_DIR"
  if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    # The append-only file keeps queued tasks across a broker restart.
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --dir "$REDIS_DIR" \
      --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" \
      --save '' --appendonly yes --appendfsync everysec --protected-mode yes
    for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  echo "Redis on 127.0.0.1:$REDIS_PORT"
}

redis_stop() {
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 || break; sleep 0.1; done
}

case "${1:-}" in
  start) pg_start "${2:-}"; redis_start ;;
  stop) redis_stop; pgbouncer_stop; replica_stop; pg_stop; echo "stopped" ;;
  start-replica) replica_start ;;
  stop-replica) replica_stop ;;
  start-pgbouncer) pgbouncer_start ;;
  stop-pgbouncer) pgbouncer_stop ;;
  start-redis) redis_start ;;
  stop-redis) redis_stop ;;
  restart-redis) redis_stop; redis_start ;;
  status)
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 \
      && [ -s "$PG_DATA/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1 ;;
  pg-datadir) echo "$PG_DATA" ;;
  env)
    echo "DATABASE_URL=postgres://growth:growth@127.0.0.1:$PG_PORT/growth"
    echo "CELERY_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/0"
    echo "CACHE_URL=redis://127.0.0.1:$REDIS_PORT/1"
    ;;
  replica-url) echo "postgres://growth:growth@127.0.0.1:$REPLICA_PORT/growth" ;;
  pgbouncer-url) echo "postgres://growth:growth@127.0.0.1:$PGBOUNCER_PORT/growth" ;;
  *) echo "usage: $0 start [--durable] | stop | start-redis | stop-redis | restart-redis | status | env | pg-datadir" \
       "| start-replica | stop-replica | replica-url | start-pgbouncer | stop-pgbouncer | pgbouncer-url" >&2; exit 2 ;;
esac
