#!/usr/bin/env bash
# Run the benchmarks (each prints JSON and saves bench/results/<name>.json).
#   scripts/bench.sh                 # all of them
#   scripts/bench.sh ingest report   # some of them
# PostgreSQL and Redis are started on loopback (and stopped again if this run started them).
set -euo pipefail
cd "$(dirname "$0")/.."
names=("$@")
# Tools the benchmarks need (wrk for bench/assignment.py): installed where missing.
scripts/system-deps.sh
[ ${#names[@]} -eq 0 ] && names=(ingest segments assignment report delivery decisions analytics scaling)
# PG_PORT / REDIS_PORT choose the ports (scripts/services.sh); the benchmarks read the URLs below.
if ! scripts/services.sh status; then trap 'scripts/services.sh stop' EXIT; fi
scripts/services.sh start
set -a; eval "$(scripts/services.sh env)"; set +a
for name in "${names[@]}"; do
  echo "== bench/$name.py =="
  .venv/bin/python "bench/$name.py"
done
