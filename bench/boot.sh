#!/usr/bin/env bash
# Boot timeline benchmark (issue 8): boots workers from the baked image with the shipped
# static binary and prints, first boot and reboot side by side, when each milestone
# came after the instance start. Needs root (systemd-nspawn, network namespaces).
#   bench/boot.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build -q -p nodewright --bin nodewright --profile dist --target x86_64-unknown-linux-musl
cargo build -q -p nodewright-e2e --bin bench-boot
NODEWRIGHT_NODE_BINARY="$PWD/target/x86_64-unknown-linux-musl/dist/nodewright" \
  exec target/debug/bench-boot "${1:-10}"
