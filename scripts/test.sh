#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). Installs what it needs first.
#   1. set-up (Debian packages, musl target, Python tools)   scripts/setup.sh
#   2. formatting and lints                                   cargo fmt, cargo clippy
#   3. unit, golden and end-to-end tests                      cargo nextest
#   4. the static release binary, and its size                cargo build --profile dist
#   5. booted nodes again, with that binary baked in              cargo nextest (booted)
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

step "test"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

step "release build (static, x86_64-unknown-linux-musl)"
cargo build -p nodewright --bin nodewright --profile dist --target x86_64-unknown-linux-musl --locked
binary=target/x86_64-unknown-linux-musl/dist/nodewright
file "$binary" 2>/dev/null || true
if readelf -d "$binary" | grep -q NEEDED; then
  echo "error: $binary needs shared libraries:" >&2
  readelf -d "$binary" | grep NEEDED >&2
  exit 1
fi
echo "static binary: $binary, $(stat -c %s "$binary") bytes ($(du -h "$binary" | cut -f1))"

step "booted nodes with the static binary baked in"
# The tests above bake the debug build into the node image (it runs there: the image is
# Debian 12 like this machine). What ships is the static build, so boot it too.
export NODEWRIGHT_NODE_BINARY="$PWD/$binary"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run -p nodewright-e2e --locked -E 'binary(booted)'
else
  cargo test -p nodewright-e2e --locked --test booted
fi
