#!/usr/bin/env bash
# Boots a worker from examples/worker into ./demo-node with the local stand-ins for AWS
# (moto for S3, a fake IMDS), then prints the timeline and `nodewright status`.
# Usage: scripts/demo.sh [worker]   (the control-plane example needs volumes and a PKI: see README)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins
rm -rf demo-node
exec target/debug/demo "${1:-worker}" demo-node
