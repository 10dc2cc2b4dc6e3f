#!/usr/bin/env bash
# A local Redis Cluster for trying the gateway on: 3 masters + 3 replicas on
# fixed loopback ports (7101-7106 by default; each node's cluster bus is
# port + 10000), data and logs under target/cluster/. Prints the seed URL to
# give `streamgate serve --redis-cluster --redis-url`.
#
# Usage: scripts/cluster.sh start|stop|status
#   STREAMGATE_CLUSTER_PORT  first port (default 7101; at most 55530)
#   STREAMGATE_CLUSTER_SERVER  server binary (default redis-server)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

first=${STREAMGATE_CLUSTER_PORT:-7101}
server=${STREAMGATE_CLUSTER_SERVER:-redis-server}
dir=$PWD/target/cluster
ports=()
for i in 0 1 2 3 4 5; do ports+=($((first + i))); done
if [ "${ports[5]}" -gt 55535 ]; then
    echo "error: port ${ports[5]} is too high: a node's bus port (port + 10000) must be a valid port" >&2
    exit 1
fi

cli() { redis-cli -h 127.0.0.1 "$@"; }

start() {
    [ "$server" = redis-server ] && ensure_apt redis-server redis-server
    ensure_apt redis-cli redis-tools
    for port in "${ports[@]}"; do
        if cli -p "$port" ping >/dev/null 2>&1; then
            echo "error: something already answers on 127.0.0.1:$port; run '$0 stop' or set STREAMGATE_CLUSTER_PORT" >&2
            exit 1
        fi
    done
    rm -rf "$dir"
    for port in "${ports[@]}"; do
        mkdir -p "$dir/$port"
        "$server" --port "$port" --bind 127.0.0.1 --daemonize yes \
            --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 2000 --save "" --appendonly no \
            --dir "$dir/$port" --logfile "$dir/$port/server.log" \
            --pidfile "$dir/$port/server.pid"
    done
    for port in "${ports[@]}"; do
        for _ in $(seq 100); do cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
        cli -p "$port" ping >/dev/null || { echo "error: node $port did not start; see $dir/$port/server.log" >&2; exit 1; }
    done
    nodes=()
    for port in "${ports[@]}"; do nodes+=("127.0.0.1:$port"); done
    cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 ||
        { cat "$dir/create.log" >&2; exit 1; }
    for port in "${ports[@]}"; do
        for _ in $(seq 600); do
            cli -p "$port" cluster info | grep -q '^cluster_state:ok' && break
            sleep 0.05
        done
        cli -p "$port" cluster info | grep -q '^cluster_state:ok' ||
            { echo "error: node $port never reached cluster_state:ok" >&2; exit 1; }
    done
    echo "==> cluster up: masters and replicas on 127.0.0.1:${ports[0]}-${ports[5]}" >&2
    echo "==> run: streamgate serve --redis-cluster --redis-url redis://127.0.0.1:${ports[0]}" >&2
    echo "redis://127.0.0.1:${ports[0]}"
}

stop() {
    for port in "${ports[@]}"; do
        pidfile=$dir/$port/server.pid
        if [ -f "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
            rm -f "$pidfile"
        fi
    done
    echo "==> cluster stopped" >&2
}

status() {
    for port in "${ports[@]}"; do
        role=$(cli -p "$port" role 2>/dev/null | head -1 || true)
        echo "127.0.0.1:$port ${role:-down}"
    done
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
