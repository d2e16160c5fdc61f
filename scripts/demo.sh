#!/usr/bin/env bash
# `make demo`: the whole product on the embedded default (SQLite under var/, a Celery broker
# on local files, a real worker): a synthetic business of 50,000 customers, its tiers, one
# campaign of each kind with an experiment, deliveries through the worker into the database
# mailbox, simulated responses with planted effects, and the lift reports checked against
# them (`manage.py run_demo`, see demo/pipeline.py). Then the admin is served by gunicorn
# beside the worker and beat. Idempotent: a second run creates nothing new.
#
#   DEMO_SERVE=0        set everything up, print the summary and exit (tests, CI)
#   DEMO_CUSTOMERS=N    business size (default 50000); DEMO_SEED=N (default 42)
#   DEMO_PORT=N         port of the admin (default 8000)
#   GROWTH_VAR_DIR=DIR  where the database, broker, logs and generated files live (default var/)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$PWD/.venv/bin/python
PORT=${DEMO_PORT:-8000}
export GROWTH_VAR_DIR=${GROWTH_VAR_DIR:-$PWD/var}
VAR=$GROWTH_VAR_DIR
mkdir -p "$VAR"
# No DJANGO_SECRET_KEY: on the embedded default the settings generate one once into
# $VAR/secret_key (mode 0600), which every later manage.py command here also uses.
unset DJANGO_SECRET_KEY
export DJANGO_DEBUG=false DJANGO_SECURE_SSL_REDIRECT=false DJANGO_SECURE_COOKIES=false DJANGO_SECURE_HSTS_SECONDS=0
export DJANGO_ALLOWED_HOSTS=127.0.0.1,localhost
unset DATABASE_URL CELERY_BROKER_URL CACHE_URL
# Messages land in the database mailbox the admin shows: no SMTP server or SMS/push provider needed.
# The simulated customers respond within seconds of exposure (demo/responses.py): their
# 7-14 day conversion windows are complete at once, so reports count every window.
export GROWTH_REPORT_EXCLUDE_OPEN_WINDOWS=${GROWTH_REPORT_EXCLUDE_OPEN_WINDOWS:-false}
export EMAIL_BACKEND=campaigns.mailbox.DatabaseMailboxBackend
export CAMPAIGNS_SMS_BACKEND=campaigns.channels.mailbox.SmsMailboxBackend
export CAMPAIGNS_PUSH_BACKEND=campaigns.channels.mailbox.PushMailboxBackend

started=$(date +%s)
elapsed() { echo "$(( $(date +%s) - started )) s"; }

"$PY" manage.py migrate --no-input -v 0
"$PY" manage.py collectstatic --no-input -v 0
"$PY" manage.py demo_users > "$VAR/demo-users.txt"
echo "migrated, static files collected, demo users ready ($(elapsed))"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
# The worker that delivers the demo's campaigns, and keeps serving afterwards, supervised:
# whenever it exits (a crash, the OOM killer, kill -9) it is started again, and the broker
# puts back the messages it had taken but not finished (config/broker.py). It runs in a
# session of its own so that what it leaves behind (pool processes) can be stopped as a
# group; its pid is in $VAR/worker.pid.
supervise_worker() {
  local child="" rc
  stop_worker() {
    if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; kill -KILL -- "-$child" 2>/dev/null; fi
    exit 0
  }
  trap stop_worker TERM INT
  while :; do
    setsid "$PWD/.venv/bin/celery" -A config worker --concurrency 2 --hostname "demo@%h" --loglevel INFO \
      --without-gossip --without-mingle --without-heartbeat >>"$VAR/worker.log" 2>&1 &
    child=$!
    echo "$child" > "$VAR/worker.pid"
    rc=0; wait "$child" || rc=$?
    kill -KILL -- "-$child" 2>/dev/null || true
    echo "$(date -u +%FT%TZ) demo: the Celery worker (pid $child) exited with status $rc; starting it again in 2 s" \
      | tee -a "$VAR/worker.log" >&2
    sleep 2
  done
}
supervise_worker &
pids+=($!)

LOG_LEVEL=${DEMO_LOG_LEVEL:-WARNING} "$PY" manage.py run_demo \
  --customers "${DEMO_CUSTOMERS:-50000}" --seed "${DEMO_SEED:-42}" ${DEMO_ARGS:-}
echo "make demo: everything set up in $(elapsed)"
echo
echo "Sign in as (user / password (role)):"
sed 's/^/  /' "$VAR/demo-users.txt"

if [ "${DEMO_SERVE:-1}" = 0 ]; then
  echo "Not serving (DEMO_SERVE=0): run 'make demo' again to serve the admin on http://127.0.0.1:$PORT/admin/"
  exit 0
fi

.venv/bin/celery -A config beat --loglevel INFO >>"$VAR/beat.log" 2>&1 &
pids+=($!)
# The analytics pages compute their tables on each request (SQL on SQLite here): at 50,000
# customers on a busy 2-core machine a retention table by layer or the lifecycle counts can
# take longer than gunicorn's default 30 s worker timeout, which killed the worker mid-query
# (a 500). Give them 5 minutes.
.venv/bin/gunicorn config.wsgi --bind "127.0.0.1:$PORT" --workers 2 --timeout 300 --access-logfile - >>"$VAR/web.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
if ! curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then
  echo "The admin did not come up on port $PORT (is it in use? set DEMO_PORT); see $VAR/web.log" >&2
  exit 1
fi
echo
echo "Admin:    http://127.0.0.1:$PORT/admin/   (users above)"
echo "Reports:  http://127.0.0.1:$PORT/admin/reports/"
echo "Playbook: http://127.0.0.1:$PORT/admin/playbook/"
echo "API docs: http://127.0.0.1:$PORT/api/docs/   (Authorize with: Api-Key $(cat "$VAR/demo-api-key.txt"))"
echo "API key:  $(cat "$VAR/demo-api-key.txt")   (every scope; a new one each run, the previous revoked), e.g."
echo "  curl -H 'Authorization: Api-Key $(cat "$VAR/demo-api-key.txt")' http://127.0.0.1:$PORT/api/v1/customers/cust-000001/segments"
echo "Health:   http://127.0.0.1:$PORT/readyz   (503 \"degraded\" when no worker was seen in the last minute)"
echo "Logs: $VAR/web.log, $VAR/worker.log, $VAR/beat.log. Ctrl-C stops everything."
wait
