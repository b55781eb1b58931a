#!/usr/bin/env bash
# etcd backup and restore benchmark (issue 19): the agent under test backs up a real
# etcd member (10,000 and 100,000 keys of 1 KiB) to the AWS emulator's S3 and restores
# it; both times side by side, with the throughput and the ratio between the sizes.
#   bench/etcd-backup.sh [--quick] [KEYS...]   (--quick: 1,000 keys, the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_mode "$@"
set -- "${BENCH_ARGS[@]}"
scripts/setup.sh >/dev/null
build_under_test
build_harness
quick=()
[ "$QUICK" = 1 ] && quick=(--quick)
exec "$(harness_bin bench-etcd-backup)" "${quick[@]}" "$BIN_DIR/nodewright" "$@"
