#!/usr/bin/env bash
# Install the Debian packages the tests need, where missing: PostgreSQL, Redis, Chromium,
# Postfix (the email transport is tested against a private instance on loopback), PgBouncer
# (transaction pooling is tested on loopback) and wrk (bench/assignment.py's HTTP load).
set -euo pipefail
need=()
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
command -v postfix >/dev/null || need+=(postfix)
[ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null || need+=(pgbouncer)
command -v wrk >/dev/null || need+=(wrk)
[ ${#need[@]} -eq 0 ] && exit 0
echo "Installing: ${need[*]}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -q
# Postfix without a system configuration: the tests run their own instance (tests/campaigns/postfix.py).
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
# Debian starts its own clusters/servers on install; the project runs its own instances.
$SUDO service postgresql stop >/dev/null 2>&1 || true
$SUDO service redis-server stop >/dev/null 2>&1 || true
$SUDO service postfix stop >/dev/null 2>&1 || true
$SUDO service pgbouncer stop >/dev/null 2>&1 || true
