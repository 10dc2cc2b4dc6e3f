#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit and integration tests
# against private redis-server processes (Redis 7.0, then Valkey 8.1 and
# 9.1), and the client suites against the real gateway binary. CI runs
# exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_apt redis-server redis-server
command -v node >/dev/null && command -v npm >/dev/null || ensure_apt npm npm

echo "==> cargo fmt --check" >&2
cargo fmt --all -- --check
echo "==> cargo clippy" >&2
cargo clippy --all-targets --all-features --quiet -- -D warnings
echo "==> cargo test (integration suite on Debian's redis-server)" >&2
cargo test --all-targets --all-features 2>&1
echo "==> integration suite on Valkey 8.1 and 9.1, in parallel" >&2
scripts/matrix.sh valkey-8.1 valkey-9.1
echo "==> client suites (Python, Node, grpcurl) against the real binary" >&2
cargo build --quiet --bin streamgate
clients/test.sh
