# Sourced by the bench scripts: the two builds every script shares (bench/README.md)
# and the choice between the shipped binaries and the quick mode's debug ones.
#   source bench/lib.sh; bench_mode "$@"; set -- "${BENCH_ARGS[@]}"

TARGET=x86_64-unknown-linux-musl
TARGET_DIR=${CARGO_TARGET_DIR:-target}
# The test suite's build (scripts/test.sh): the harness and, in quick mode, the binaries
# under test.
DEBUG_DIR=$TARGET_DIR/$TARGET/debug
# The release build (README, "Release build").
DIST_DIR=$TARGET_DIR/$TARGET/dist
# What ships may not grow past this (issue 14).
SIZE_LIMIT=10000000

# Sets QUICK (1 with --quick as the first argument), BENCH_ARGS (the rest) and BIN_DIR
# (where the binaries under test are: dist, or debug in quick mode).
bench_mode() {
  QUICK=0
  if [ "${1:-}" = --quick ]; then
    QUICK=1
    shift
  fi
  BENCH_ARGS=("$@")
  if [ "$QUICK" = 1 ]; then BIN_DIR=$DEBUG_DIR; else BIN_DIR=$DIST_DIR; fi
}

# The harness: exactly scripts/test.sh's build command, so after the README's set-up
# (or in CI, after the tests) it rebuilds nothing.
build_harness() {
  cargo build -q --workspace --bins --tests --target "$TARGET" --locked
}

# The binaries under test: the release build of both shipped binaries at once (one
# feature set, so every script shares one dist build), or nothing in quick mode.
build_under_test() {
  if [ "$QUICK" = 0 ]; then
    cargo build -q -p nodewright -p nodewright-shim --bins --profile dist --target "$TARGET" --locked
  fi
}

# A harness binary (bench-*, kubelet-standin) of the test build.
harness_bin() {
  echo "$DEBUG_DIR/$1"
}
