#!/usr/bin/env bash
# The whole suite, twice: on the embedded default (SQLite, files), then on PostgreSQL +
# Redis started on loopback by scripts/services.sh (and stopped again on exit).
# Extra arguments go to both pytest runs, e.g. scripts/test.sh -k assignment
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export GROWTH_VAR_DIR=${GROWTH_VAR_DIR:-$PWD/var/test}
mkdir -p "$GROWTH_VAR_DIR"

echo "== 1/2: SQLite + filesystem broker =="
env -u DATABASE_URL -u CELERY_BROKER_URL -u CACHE_URL "$PY" -m pytest -m "not postgres" "$@"

echo "== 2/2: PostgreSQL + Redis =="
# Stop on exit only what this run started.
if ! scripts/services.sh status; then trap 'scripts/services.sh stop' EXIT; fi
scripts/services.sh start
set -a; eval "$(scripts/services.sh env)"; set +a
"$PY" -m pytest -m "not pure" "$@"
