#!/usr/bin/env bash
# No-op re-run benchmark (issue 2): builds the shipped static binary and times a
# no-op `boot` on a converged root against the local stand-ins. Prints medians.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build -q -p nodewright --bin nodewright --profile dist --target x86_64-unknown-linux-musl
cargo build -q -p nodewright-e2e --bin bench-noop
exec target/debug/bench-noop target/x86_64-unknown-linux-musl/dist/nodewright "${1:-30}"
