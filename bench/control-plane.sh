#!/usr/bin/env bash
# Boot timeline of the booted HA control plane (issue 8): three control-plane nodes boot
# at once (etcd volumes, Route53, PKI, a real three-member etcd, controller-shim), one is
# replaced, a worker bootstraps through the shim; prints the medians of every node's
# milestones from its instance start, and when etcd was healthy. Needs root.
#   bench/control-plane.sh [RUNS]
# With NODEWRIGHT_NODE_BINARY set, that agent binary is baked in instead of the shipped
# static build (e.g. target/debug/nodewright, to skip the dist build).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
export NODEWRIGHT_TOOLS="${NODEWRIGHT_TOOLS:-$PWD/.tools}"
if [ -z "${NODEWRIGHT_NODE_BINARY:-}" ]; then
  cargo build -q -p nodewright --bin nodewright --profile dist --target x86_64-unknown-linux-musl
  export NODEWRIGHT_NODE_BINARY="$PWD/target/x86_64-unknown-linux-musl/dist/nodewright"
fi
cargo build -q --workspace --bins
exec target/debug/bench-control-plane "${1:-5}"
