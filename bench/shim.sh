#!/usr/bin/env bash
# controller-shim benchmark (issue 7): the shipped static shim binary, a fleet of
# workers bootstrapping at once (200, then 1000), against the AWS emulator with SigV4
# checks on. Prints bootstraps/s and latency percentiles, the shim's own time apart
# from STS/EC2/S3. Target: own p99 under 10 ms, no errors at 1000 workers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build -q -p nodewright-shim --bin controller-shim --profile dist --target x86_64-unknown-linux-musl
cargo build -q -p nodewright-e2e --bin bench-shim
export NODEWRIGHT_BIN_CONTROLLER_SHIM=target/x86_64-unknown-linux-musl/dist/controller-shim
if [ $# -eq 0 ]; then set -- 200 1000; fi
exec target/debug/bench-shim "$@"
