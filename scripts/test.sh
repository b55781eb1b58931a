#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). Installs what it needs first.
#   1. set-up (Debian packages, musl target, Python tools)   scripts/setup.sh
#   2. formatting and lints                                   cargo fmt, cargo clippy
#   3. the static release binaries, and their sizes           cargo build --profile dist
#   4. unit, golden and end-to-end tests                      cargo nextest
# The static build comes before the tests: the controller-shim image test runs the
# static shim binary in a FROM-scratch image under containerd, and booted nodes bake the
# static agent into their image (what ships), instead of the debug build used locally.
set -euo pipefail
cd "$(dirname "$0")/.."

# Here every test must run: one that cannot (not root, a tool missing) fails instead
# of skipping.
export NODEWRIGHT_REQUIRE_ALL=1

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "set-up"
scripts/setup.sh

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
# The end-to-end tests run the agent's binary, so build every binary first.
cargo build --workspace --bins --locked

step "release build (static, x86_64-unknown-linux-musl)"
# One cargo invocation for both binaries, so the shared dependencies build once.
cargo build -p nodewright -p nodewright-shim --bins --profile dist --target x86_64-unknown-linux-musl --locked
for name in nodewright controller-shim; do
  binary=target/x86_64-unknown-linux-musl/dist/$name
  file "$binary" 2>/dev/null || true
  if readelf -d "$binary" | grep -q NEEDED; then
    echo "error: $binary needs shared libraries:" >&2
    readelf -d "$binary" | grep NEEDED >&2
    exit 1
  fi
  echo "static binary: $binary, $(stat -c %s "$binary") bytes ($(du -h "$binary" | cut -f1))"
done

step "test"
export NODEWRIGHT_NODE_BINARY="$PWD/target/x86_64-unknown-linux-musl/dist/nodewright"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
