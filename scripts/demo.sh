#!/usr/bin/env bash
# The order demo in one command: a local Redis (started if none answers),
# the gateway, the live dashboard on http://127.0.0.1:8083/ and the demo
# consumers (worker-a, worker-b in `notifications`, worker-c in
# `analytics`) on stream demo:events:orders.
#
#   scripts/demo.sh [extra `streamgate demo` flags, e.g. --no-reset]
#
# STREAMGATE_REDIS_URL (default redis://127.0.0.1:6379) picks the Redis.
# SIGTERM and SIGINT (Ctrl-C) stop the gateway gracefully, then a Redis
# started here.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_local_redis
trap stop_local_redis EXIT
build_release
status=0
run_forwarding_signals target/release/streamgate demo "$@" || status=$?
exit "$status"
