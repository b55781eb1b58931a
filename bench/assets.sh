#!/usr/bin/env bash
# Asset download benchmark (issue 3): nodewright vs a sequential curl + sha256sum
# script vs the line-rate limit, on a ~300 MB kops-shaped asset set served by the
# harness's mirror with a per-connection rate cap. Also peak RSS, re-verifying the
# cache, and sha256 throughput vs openssl. Usage: bench/assets.sh [MIB_PER_S] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
# GNU time (wall time and peak RSS) and curl (the sequential baseline).
missing=()
[ -x /usr/bin/time ] || missing+=(time)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build -q -p nodewright --bin nodewright --profile dist --target x86_64-unknown-linux-musl
cargo build -q -p nodewright-e2e --bin bench-assets
exec target/debug/bench-assets target/x86_64-unknown-linux-musl/dist/nodewright "${1:-20}" "${2:-3}"
