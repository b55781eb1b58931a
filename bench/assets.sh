#!/usr/bin/env bash
# Asset download benchmark (issue 3): nodewright vs a sequential curl + sha256sum
# script vs the line-rate limit, on a ~270 MB kops-shaped asset set served by the
# harness's mirror with a per-connection rate cap. Also peak RSS, re-verifying the
# cache, and sha256 throughput vs openssl.
#   bench/assets.sh [--quick] [MIB_PER_S] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_mode "$@"
set -- "${BENCH_ARGS[@]}"
scripts/setup.sh >/dev/null
# GNU time (wall time and peak RSS) and curl (the sequential baseline).
missing=()
[ -x /usr/bin/time ] || missing+=(time)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
build_under_test
build_harness
quick=()
[ "$QUICK" = 1 ] && quick=(--quick)
exec "$(harness_bin bench-assets)" "${quick[@]}" "$BIN_DIR/nodewright" "${1:-20}" "${2:-3}"
