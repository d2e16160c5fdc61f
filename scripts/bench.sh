#!/usr/bin/env bash
# Run the benchmarks (each prints JSON and saves bench/results/<name>.json).
#   scripts/bench.sh                     # all of them, full size (hours on 2 cores)
#   scripts/bench.sh ingest report       # some of them
#   scripts/bench.sh --quick [name ...]  # every one at a small size (a few minutes): a check
#   BENCH_QUICK=1 make bench             # the same quick run through make
# Quick runs never touch bench/results/: each JSON goes to var/bench-quick/<name>.json
# (BENCH_QUICK_DIR to choose another folder).
# PostgreSQL and Redis are started on loopback (and stopped again if this run started them).
# Not here: bench/demo_soak.py (about an hour; see README).
set -euo pipefail
cd "$(dirname "$0")/.."
quick="${BENCH_QUICK:-}"
[ "$quick" = 0 ] && quick=""
names=()
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) names+=("$arg") ;;
  esac
done
all=(ingest segments assignment report report_values delivery delivery_pgbouncer decisions values_decisions
     analytics scaling)
[ ${#names[@]} -eq 0 ] && names=("${all[@]}")

# Each benchmark's script and arguments: full size (its defaults), and the quick ones.
script_of() {
  case "$1" in
    delivery_pgbouncer) echo delivery ;;
    *) echo "$1" ;;
  esac
}
full_args() {
  case "$1" in
    delivery_pgbouncer) echo "--pgbouncer" ;;
    *) echo "" ;;
  esac
}
quick_args() {
  case "$1" in
    ingest) echo "--events 20000 --customers 2000 --api-batches 4 --api-seconds 20" ;;
    segments) echo "--customers 5000 --events 50000 --sqlite-customers 2000 --sqlite-events 20000" ;;
    assignment) echo "--customers 20000 --duration 2" ;;
    report) echo "--customers 20000 --repeats 1" ;;
    report_values) echo "--customers 20000 --repeats 1" ;;
    delivery) echo "--customers 300 --noop 200 --timeout 300" ;;
    delivery_pgbouncer) echo "--pgbouncer --customers 300 --noop 200 --timeout 300" ;;
    decisions) echo "--runs 40" ;;
    values_decisions) echo "--sims 40 --n 300 --conversion-sims 40" ;;
    analytics) echo "--customers 5000 --repeats 1" ;;
    scaling) echo "--sizes 1000 2000 --repeats 1" ;;
    *) echo "unknown benchmark: $1" >&2; return 1 ;;
  esac
}
for name in "${names[@]}"; do
  quick_args "$name" >/dev/null || exit 2
  [ -f "bench/$(script_of "$name").py" ] || { echo "missing bench/$(script_of "$name").py" >&2; exit 2; }
done

# The virtualenv (a fresh clone has none: `make bench` builds it first; this covers a direct call).
if [ ! -x .venv/bin/python ]; then make venv; fi
# Tools the benchmarks need (wrk for bench/assignment.py, pgbouncer): installed where missing.
scripts/system-deps.sh
# Servers only when a benchmark needs them (values_decisions is a simulation without any).
needs_servers=""
for name in "${names[@]}"; do [ "$name" = values_decisions ] || needs_servers=1; done
if [ -n "$needs_servers" ]; then
  # PG_PORT / REDIS_PORT choose the ports (scripts/services.sh); the benchmarks read the URLs below.
  if ! scripts/services.sh status >/dev/null 2>&1; then trap 'scripts/services.sh stop' EXIT; fi
  scripts/services.sh start
  set -a; eval "$(scripts/services.sh env)"; set +a
fi

out_dir=${BENCH_QUICK_DIR:-var/bench-quick}
[ -n "$quick" ] && mkdir -p "$out_dir"
failed=()
for name in "${names[@]}"; do
  script="bench/$(script_of "$name").py"
  if [ -n "$quick" ]; then
    echo "== $script (quick) -> $out_dir/$name.json =="
    # shellcheck disable=SC2046  # the arguments are words on purpose
    if .venv/bin/python "$script" $(quick_args "$name") --no-save >"$out_dir/$name.json"; then
      .venv/bin/python -c 'import json, sys; json.load(open(sys.argv[1]))' "$out_dir/$name.json" \
        || { echo "$name: output is not one JSON document" >&2; failed+=("$name"); }
    else
      failed+=("$name")
    fi
  else
    echo "== $script $(full_args "$name") =="
    # shellcheck disable=SC2046
    .venv/bin/python "$script" $(full_args "$name") || failed+=("$name")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
