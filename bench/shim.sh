#!/usr/bin/env bash
# controller-shim benchmark (issues 7 and 15): the shipped static shim binary, a fleet of
# workers bootstrapping at once (200, then 1000), against the AWS emulator with SigV4
# checks on. Prints bootstraps/s and latency percentiles, the shim's own time apart
# from STS/EC2/S3; each fleet alone and then next to a credential-less flood from four
# other source addresses, side by side. Target: own p99 under 10 ms, no errors at 1000
# workers, none in the flood.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
# The same invocation as scripts/test.sh, so the two share every artifact.
cargo build -q -p nodewright -p nodewright-shim --bins --profile dist --target x86_64-unknown-linux-musl
cargo build -q -p nodewright-e2e --bin bench-shim
export NODEWRIGHT_BIN_CONTROLLER_SHIM=target/x86_64-unknown-linux-musl/dist/controller-shim
if [ $# -eq 0 ]; then set -- 200 1000; fi
echo "== shared: the shim, the emulator and the workers on both cores"
target/debug/bench-shim "$@"
echo
echo "== pinned: the shim alone on CPU 1; the emulator and the workers on CPU 0"
NODEWRIGHT_SHIM_CPUS=1 taskset -c 0 target/debug/bench-shim "$@"
