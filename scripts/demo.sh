#!/usr/bin/env bash
# `make demo`: the product on the embedded default (SQLite under var/, a Celery broker on
# local files, a real worker), served by gunicorn on loopback. Idempotent.
# DEMO_SERVE=0 sets everything up and exits instead of serving (used by tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$PWD/.venv/bin/python
PORT=${DEMO_PORT:-8000}
mkdir -p var
[ -s var/secret_key ] || "$PY" -c "import secrets; print(secrets.token_urlsafe(50))" > var/secret_key
export DJANGO_SECRET_KEY=$(cat var/secret_key)
export DJANGO_DEBUG=false DJANGO_SECURE_SSL_REDIRECT=false DJANGO_SECURE_COOKIES=false DJANGO_SECURE_HSTS_SECONDS=0
export DJANGO_ALLOWED_HOSTS=127.0.0.1,localhost
unset DATABASE_URL CELERY_BROKER_URL CACHE_URL

"$PY" manage.py migrate --no-input -v 0
"$PY" manage.py collectstatic --no-input -v 0
echo "Demo users:"
"$PY" manage.py demo_users

# A small synthetic business (fixed seed), generated once into var/demo-data/ and imported
# with the import commands, which are idempotent: re-running `make demo` stores nothing twice.
DEMO_DATA=var/demo-data
if [ ! -s "$DEMO_DATA/customers.csv" ] || [ ! -s "$DEMO_DATA/events.jsonl" ] || [ ! -e "$DEMO_DATA/memberships.jsonl" ]; then
  "$PY" manage.py generate_demo_data --customers "${DEMO_CUSTOMERS:-2000}" --seed 42 --out "$DEMO_DATA"
fi
"$PY" manage.py import_customers "$DEMO_DATA/customers.csv"
"$PY" manage.py import_memberships "$DEMO_DATA/memberships.jsonl"
"$PY" manage.py import_events "$DEMO_DATA/events.jsonl"
# Place every customer in a layer of every dimension and materialize the rule segments.
"$PY" manage.py recompute_segments

[ "${DEMO_SERVE:-1}" = 0 ] && exit 0

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
.venv/bin/celery -A config worker --concurrency 2 --loglevel INFO >var/worker.log 2>&1 &
pids+=($!)
.venv/bin/celery -A config beat --loglevel INFO >var/beat.log 2>&1 &
pids+=($!)
.venv/bin/gunicorn config.wsgi --bind 127.0.0.1:$PORT --workers 2 --access-logfile - >var/web.log 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
echo
echo "Admin:   http://127.0.0.1:$PORT/admin/   (users above)"
echo "API:     http://127.0.0.1:$PORT/api/docs/"
echo "Logs:    var/web.log, var/worker.log, var/beat.log. Ctrl-C stops everything."
wait
