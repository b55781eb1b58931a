#!/usr/bin/env bash
# controller-shim benchmark (issues 7 and 15): the shipped static shim binary, a fleet of
# workers bootstrapping at once (200, then 1000), against the AWS emulator with SigV4
# checks on. Prints bootstraps/s and latency percentiles, the shim's own time apart
# from STS/EC2/S3; each fleet alone and then next to a credential-less flood from four
# other source addresses, side by side. Target: own p99 under 10 ms, no errors at 1000
# workers, none in the flood.
#   bench/shim.sh [--quick] [WORKERS...]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_mode "$@"
set -- "${BENCH_ARGS[@]}"
scripts/setup.sh >/dev/null
# The shared builds (bench/lib.sh): the release build of both binaries, the test build's
# harness.
build_under_test
build_harness
export NODEWRIGHT_BIN_CONTROLLER_SHIM=$BIN_DIR/controller-shim
bench=$(harness_bin bench-shim)
if [ $# -eq 0 ]; then
  if [ "$QUICK" = 1 ]; then set -- 20; else set -- 200 1000; fi
fi
echo "== shared: the shim, the emulator and the workers on both cores"
"$bench" "$@"
echo
echo "== pinned: the shim alone on CPU 1; the emulator and the workers on CPU 0"
NODEWRIGHT_SHIM_CPUS=1 taskset -c 0 "$bench" "$@"
