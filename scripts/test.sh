#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). Installs what it needs first.
#   1. set-up (Debian packages, musl target, Python tools)   scripts/setup.sh
#   2. one feature set, format, lints  scripts/check-feature-set.sh, cargo fmt, clippy
#   3. one static build of everything, for the tests          cargo build --target musl
#   4. unit, golden and end-to-end tests                      cargo nextest
#   5. every benchmark once, quick (runs, prints its table)   bench/quick.sh
# The tests run from a static (x86_64-unknown-linux-musl) debug build: the binaries they
# run are static, as what ships is, so booted nodes bake them into their image and the
# controller-shim image test runs one FROM scratch, and the dependencies are compiled
# once for all of it. The shipped `dist` build (fat LTO, ~13 min more on two cores) is
# not rebuilt here: README, "Release build"; the benchmarks build it, except in their
# quick mode, which runs them from this build (bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl

# Here every test must run: one that cannot (not root, a tool missing) fails instead
# of skipping.
export NODEWRIGHT_REQUIRE_ALL=1

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "set-up"
scripts/setup.sh

step "one feature set"
# Any -p selection builds the dependencies as the workspace build does (workspace-hack).
scripts/check-feature-set.sh

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build (static, $TARGET)"
# The end-to-end tests run the workspace's binaries, so build them with the tests.
cargo build --workspace --bins --tests --target "$TARGET" --locked
for name in nodewright controller-shim; do
  binary=target/$TARGET/debug/$name
  if readelf -ld "$binary" | grep -Eq 'INTERP|\(NEEDED\)'; then
    echo "error: $binary is not static:" >&2
    readelf -ld "$binary" | grep -E 'INTERP|NEEDED' >&2
    exit 1
  fi
  echo "static binary: $binary, $(stat -c %s "$binary") bytes"
done

step "test"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --target "$TARGET" --locked --no-fail-fast
else
  cargo test --workspace --target "$TARGET" --locked --no-fail-fast
fi

step "benchmarks, quick"
# A broken benchmark fails CI; the figures of a quick run mean nothing (bench/README.md).
bench/quick.sh
