#!/usr/bin/env bash
# Runs the gateway against a local Redis, starting one if none answers.
#
#   scripts/run.sh [extra `streamgate serve` flags]
#
# STREAMGATE_REDIS_URL (default redis://127.0.0.1:6379) and every other
# STREAMGATE_* variable are honoured. A Redis started here lives in
# .run/ and is stopped when the gateway exits. SIGTERM and SIGINT (Ctrl-C,
# `kill <pid of run.sh>`) stop the gateway gracefully, then that Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_local_redis
trap stop_local_redis EXIT
build_release
status=0
run_forwarding_signals target/release/streamgate serve "$@" || status=$?
exit "$status"
