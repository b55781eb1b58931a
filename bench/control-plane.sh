#!/usr/bin/env bash
# Boot timeline of the booted HA control plane (issue 8): three control-plane nodes boot
# at once (etcd volumes, Route53, PKI, a real three-member etcd, controller-shim), one is
# replaced, a worker bootstraps through the shim; prints the medians of every node's
# milestones from its instance start, and when etcd was healthy. Needs root.
#   bench/control-plane.sh [--quick] [RUNS]
# With NODEWRIGHT_NODE_BINARY set, that agent binary is baked in instead of the one the
# mode picks (the shipped build; the test build's in quick mode). The nodes download
# controller-shim from the mirror: the shipped one, or the test build's in quick mode.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_mode "$@"
set -- "${BENCH_ARGS[@]}"
scripts/setup.sh >/dev/null
export NODEWRIGHT_TOOLS="${NODEWRIGHT_TOOLS:-$PWD/.tools}"
build_under_test
if [ -z "${NODEWRIGHT_NODE_BINARY:-}" ]; then
  export NODEWRIGHT_NODE_BINARY="$PWD/$BIN_DIR/nodewright"
fi
export NODEWRIGHT_BIN_CONTROLLER_SHIM="${NODEWRIGHT_BIN_CONTROLLER_SHIM:-$PWD/$BIN_DIR/controller-shim}"
build_harness
if [ "$QUICK" = 1 ]; then set -- 1; fi
exec "$(harness_bin bench-control-plane)" "${1:-5}"
