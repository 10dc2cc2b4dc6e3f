#!/usr/bin/env bash
# Runs the integration suite against several servers at once: one leg per
# server, in parallel, each with STREAMGATE_TEST_REDIS_SERVER pointing at
# that server's binary. Prints each leg's result and time, any NOTE a test
# printed (a check the server could not do, e.g. TLS), and the whole log of
# a failed leg.
#
# Usage: scripts/matrix.sh [SERVER...]
#   SERVER: redis-7.0 (Debian's redis-server), valkey-8.1, valkey-9.1
#   (fetched by scripts/servers.sh); default: all three.
set -euo pipefail
cd "$(dirname "$0")/.."

legs=("$@")
[ ${#legs[@]} -gt 0 ] || legs=(redis-7.0 valkey-8.1 valkey-9.1)

# Build once, then run the test binary itself: two `cargo test` processes
# would queue on cargo's build lock. Same features as scripts/test.sh, so
# the build `cargo test` made there is reused.
binary=$(cargo test --quiet --all-features --test integration --no-run --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "integration" and message.get("executable"):
        print(message["executable"])')
[ -n "$binary" ] || { echo "error: no integration test binary was built" >&2; exit 1; }

logs=target/matrix
mkdir -p "$logs"
declare -A pids paths
for leg in "${legs[@]}"; do
    case $leg in
        redis-7.0) paths[$leg]=$(command -v redis-server) ;;
        *) paths[$leg]=$(scripts/servers.sh "$leg") ;;
    esac
done
for leg in "${legs[@]}"; do
    (
        start=$(date +%s)
        status=0
        STREAMGATE_TEST_REDIS_SERVER=${paths[$leg]} "$binary" >"$logs/$leg.log" 2>&1 || status=$?
        echo "$(($(date +%s) - start))" >"$logs/$leg.seconds"
        exit "$status"
    ) &
    pids[$leg]=$!
done

failed=()
for leg in "${legs[@]}"; do
    if wait "${pids[$leg]}"; then result=ok; else result=FAILED; failed+=("$leg"); fi
    version=$("${paths[$leg]}" --version | grep -o 'v=[^ ]*')
    summary=$(grep -h '^test result:' "$logs/$leg.log" | tail -1 || true)
    echo "==> $leg ($version): $result in $(cat "$logs/$leg.seconds") s; ${summary:-no summary}" >&2
    grep -h '^NOTE' "$logs/$leg.log" | sort -u | sed 's/^/    /' >&2 || true
done
for leg in "${failed[@]}"; do
    echo "==> log of the failed leg $leg ($logs/$leg.log):" >&2
    cat "$logs/$leg.log" >&2
done
[ ${#failed[@]} -eq 0 ]
