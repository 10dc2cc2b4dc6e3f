# Shared helpers for scripts/*.sh: sourced, not run.

# apt-get update runs at most once per script run (and its children).
apt_update_once() {
    [ -n "${STREAMGATE_APT_UPDATED:-}" ] && return 0
    local log
    log=$(mktemp)
    echo "==> apt-get update" >&2
    if ! apt-get update -qq >"$log" 2>&1; then
        echo "error: apt-get update failed:" >&2
        tail -n 20 "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    export STREAMGATE_APT_UPDATED=1
}

# Installs a Debian package that provides COMMAND when COMMAND is missing:
# directly when root (apt-get update first), otherwise stops with the exact
# command to run. A failed install stops the script with apt's own words.
ensure_apt() {
    local command=$1 package=$2
    command -v "$command" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "error: $command is missing; install it with: sudo apt-get install -y $package" >&2
        exit 1
    fi
    apt_update_once
    echo "==> installing $package (provides $command)" >&2
    local log
    log=$(mktemp)
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >"$log" 2>&1; then
        echo "error: apt-get install -y $package failed:" >&2
        tail -n 20 "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    if ! command -v "$command" >/dev/null 2>&1; then
        echo "error: installed $package, but $command is still not on PATH" >&2
        exit 1
    fi
}

# Makes sure a Redis answers at $STREAMGATE_REDIS_URL (default
# redis://127.0.0.1:6379, exported): starts a local redis-server with its
# data in .run/ when the URL is a local one and nothing answers. Sets
# REDIS_PIDFILE when it started one (stop_local_redis stops it).
REDIS_PIDFILE=
ensure_local_redis() {
    ensure_apt redis-server redis-server
    ensure_apt redis-cli redis-tools
    local url=${STREAMGATE_REDIS_URL:-redis://127.0.0.1:6379}
    export STREAMGATE_REDIS_URL=$url
    redis-cli -u "$url" ping >/dev/null 2>&1 && return 0
    case "$url" in
        redis://127.0.0.1:*|redis://localhost:*) ;;
        *) echo "error: no Redis answers at $url" >&2; exit 1 ;;
    esac
    local port=${url##*:}
    port=${port%%/*}
    mkdir -p .run
    echo "==> starting redis-server on port $port (data in .run/)" >&2
    redis-server --port "$port" --bind 127.0.0.1 --dir "$PWD/.run" \
        --appendonly yes --daemonize yes --pidfile "$PWD/.run/redis.pid" \
        --logfile "$PWD/.run/redis.log"
    REDIS_PIDFILE="$PWD/.run/redis.pid"
    for _ in $(seq 50); do
        redis-cli -u "$url" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "error: redis-server did not answer on port $port; see .run/redis.log" >&2
    exit 1
}

# Stops the redis-server ensure_local_redis started, if any.
stop_local_redis() {
    if [ -n "$REDIS_PIDFILE" ] && [ -f "$REDIS_PIDFILE" ]; then
        kill "$(cat "$REDIS_PIDFILE")" 2>/dev/null || true
    fi
}

# Builds the release binary, showing cargo's progress: the first build
# compiles every dependency and takes several minutes.
build_release() {
    if [ ! -x target/release/streamgate ]; then
        echo "==> building streamgate (release); the first build takes several minutes" >&2
    else
        echo "==> cargo build --release" >&2
    fi
    cargo build --release --bin streamgate
}

# Runs a command in the background and waits for it, passing SIGTERM and
# SIGINT on to it (as SIGTERM, the gateway's graceful shutdown), so that
# stopping the script stops the command instead of orphaning it on a port.
# Returns the command's exit status.
run_forwarding_signals() {
    "$@" &
    local child=$!
    # shellcheck disable=SC2064 # the child's PID is fixed now
    trap "kill -TERM $child 2>/dev/null || true" TERM INT
    local status=0
    while :; do
        status=0
        wait "$child" || status=$?
        # A trapped signal interrupts wait; keep waiting until it exits.
        kill -0 "$child" 2>/dev/null || break
    done
    trap - TERM INT
    return "$status"
}
