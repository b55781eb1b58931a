#!/usr/bin/env bash
# Boot timeline benchmark (issue 8): boots the booted Kubernetes worker (containerd from
# the image, the kubelet stand-in from the asset mirror) from a plain image and from one
# with the spec prebaked, interleaved, and prints when each milestone came after the
# instance start, side by side with the ratios. Needs root (systemd-nspawn, network
# namespaces).
#   bench/boot.sh [RUNS]
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
cargo build -q -p nodewright-e2e --bin bench-boot --bin kubelet-standin
exec target/debug/bench-boot "${1:-10}"
