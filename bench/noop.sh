#!/usr/bin/env bash
# No-op re-run benchmark (issues 2 and 14): the shipped agent's size (fails above
# 10 MB), then a first boot, a no-op `boot`, `plan` and `check` on a converged root
# against the local stand-ins, side by side. Prints medians.
#   bench/noop.sh [--quick] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_mode "$@"
set -- "${BENCH_ARGS[@]}"
scripts/setup.sh >/dev/null
build_under_test
build_harness
agent=$BIN_DIR/nodewright
if [ "$QUICK" = 1 ]; then
  "$(harness_bin bench-noop)" --quick "$agent"
  exit
fi
"$(harness_bin bench-noop)" "$agent" "${1:-30}"
size=$(stat -c %s "$agent")
if [ "$size" -gt "$SIZE_LIMIT" ]; then
  echo "error: $agent is $size bytes, over the $SIZE_LIMIT-byte limit" >&2
  exit 1
fi
