#!/usr/bin/env bash
# Boot timeline benchmark (issues 8 and 14): boots the booted Kubernetes worker
# (containerd from the image, the kubelet stand-in from the asset mirror) from a plain
# image and from one with the spec prebaked, interleaved, and prints when each
# milestone came after the instance start, side by side with the ratios. Needs root
# (systemd-nspawn, network namespaces).
#   bench/boot.sh [--quick] [RUNS]
# With NODEWRIGHT_NODE_BINARY set, that agent binary is baked in instead of the one the
# mode picks (the shipped build; the test build's in quick mode).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_mode "$@"
set -- "${BENCH_ARGS[@]}"
scripts/setup.sh >/dev/null
export NODEWRIGHT_TOOLS="${NODEWRIGHT_TOOLS:-$PWD/.tools}"
if [ -z "${NODEWRIGHT_NODE_BINARY:-}" ]; then
  build_under_test
  export NODEWRIGHT_NODE_BINARY="$PWD/$BIN_DIR/nodewright"
fi
build_harness
if [ "$QUICK" = 1 ]; then set -- 1; fi
exec "$(harness_bin bench-boot)" "${1:-10}"
