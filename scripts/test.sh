#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit and integration tests
# against private redis-server processes (Redis 7.0, then Valkey 8.1 and
# 9.1), and the client suites against the real gateway binary. CI runs
# exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_apt redis-server redis-server
ensure_apt redis-cli redis-tools # the cluster tests create their cluster with it
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

# -- dashboard in a browser ---------------------------------------------------
# The live dashboard in headless Chromium (Debian's package, driven by
# playwright-core from npm; no browser download) against the real binary
# and a private redis-server. Screenshots: tests/browser/artifacts/.
echo "==> dashboard in headless Chromium (tests/browser)" >&2
ensure_apt chromium chromium
ensure_apt redis-cli redis-tools
(
    cd tests/browser
    if [ ! -f node_modules/.package-lock.json ] ||
        [ package-lock.json -nt node_modules/.package-lock.json ]; then
        PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
    fi
    STREAMGATE_BIN="$PWD/../../target/debug/streamgate" CHROMIUM=/usr/bin/chromium npm test
)
