#!/usr/bin/env bash
# Runs the gateway against a local Redis, starting one if none answers.
#
#   scripts/run.sh [extra `streamgate serve` flags]
#
# STREAMGATE_REDIS_URL (default redis://127.0.0.1:6379) and every other
# STREAMGATE_* variable are honoured. A Redis started here lives in
# .run/ and is stopped when the gateway exits.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_apt redis-server redis-server
ensure_apt redis-cli redis-tools

url=${STREAMGATE_REDIS_URL:-redis://127.0.0.1:6379}
export STREAMGATE_REDIS_URL=$url
if ! redis-cli -u "$url" ping >/dev/null 2>&1; then
    case "$url" in
        redis://127.0.0.1:*|redis://localhost:*) ;;
        *) echo "error: no Redis answers at $url" >&2; exit 1 ;;
    esac
    port=${url##*:}
    port=${port%%/*}
    mkdir -p .run
    echo "==> starting redis-server on port $port (data in .run/)" >&2
    redis-server --port "$port" --bind 127.0.0.1 --dir "$PWD/.run" \
        --appendonly yes --daemonize yes --pidfile "$PWD/.run/redis.pid" \
        --logfile "$PWD/.run/redis.log"
    trap 'kill "$(cat .run/redis.pid)" 2>/dev/null || true' EXIT
    for _ in $(seq 50); do
        redis-cli -u "$url" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

cargo build --release --quiet
target/release/streamgate serve "$@"
