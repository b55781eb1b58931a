#!/usr/bin/env bash
# Operating-a-node benchmark (issue 9): a no-op boot of the worker example side by side
# with a baseline, then repair / status / verify on a node with big binaries.
#   bench/ops.sh [--quick] [RUNS] [BINARY_MB]
# The baseline is the figure recorded for the foundation, or, with BASELINE_REV=<tag or
# revision> (the previous release's tag), that revision's own release build run with its
# own examples/worker (never today's spec: an older agent refuses fields it never knew).
# It is built once into target/bench/baseline-<rev> (a release build: ~13 min).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_mode "$@"
set -- "${BENCH_ARGS[@]}"
scripts/setup.sh >/dev/null
build_under_test
build_harness
baseline=()
if [ -n "${BASELINE_REV:-}" ] && [ "$QUICK" = 0 ]; then
  rev=$(git rev-parse --short "$BASELINE_REV^{commit}")
  dir=$PWD/$TARGET_DIR/bench/baseline-$rev
  if [ ! -x "$dir/nodewright" ]; then
    rm -rf "$dir/src"
    mkdir -p "$dir/src"
    git archive "$rev" | tar -x -C "$dir/src"
    # Its own lock file and target dir: an old tree's dependencies are not ours.
    (cd "$dir/src" && cargo build -q --locked -p nodewright --bin nodewright --profile dist \
      --target "$TARGET" --target-dir "$dir/target")
    cp "$dir/target/$TARGET/dist/nodewright" "$dir/nodewright"
  fi
  baseline=(--baseline "$dir/nodewright" "$dir/src/examples/worker")
fi
quick=()
[ "$QUICK" = 1 ] && quick=(--quick)
exec "$(harness_bin bench-ops)" "${quick[@]}" "$BIN_DIR/nodewright" "${1:-30}" "${2:-100}" "${baseline[@]}"
