#!/usr/bin/env bash
# Boots one worker node from the baked image (systemd-nspawn, its own network namespace,
# IMDS and the AWS emulator) and leaves it up until you press Enter. Needs root.
#   scripts/boot-node.sh [SPEC.yaml]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build -q --workspace --bins
exec target/debug/boot-node "${1:-tests/fixtures/booted-worker/nodespec.yaml}"
