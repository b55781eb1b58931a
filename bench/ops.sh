#!/usr/bin/env bash
# Operating-a-node benchmark (issue 9). Builds the shipped static binary twice, from
# this tree and from a baseline revision (default: the foundation, 9a3cbca), and runs
# target/debug/bench-ops: a no-op boot side by side, then status / verify / repair on
# a node with big binaries. Usage: bench/ops.sh [RUNS] [BINARY_MB]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
rev=${BASELINE_REV:-9a3cbca}
out=target/bench
mkdir -p "$out"
target=x86_64-unknown-linux-musl
build() { # manifest dir, destination
  cargo build -q --manifest-path "$1/Cargo.toml" -p nodewright --bin nodewright \
    --profile dist --target $target --target-dir "$PWD/target"
  cp "target/$target/dist/nodewright" "$2"
}
if [ ! -x "$out/nodewright-$rev" ]; then
  src=$(mktemp -d)
  trap 'rm -rf "$src"' EXIT
  git archive "$rev" | tar -x -C "$src"
  build "$src" "$out/nodewright-$rev"
fi
build . "$out/nodewright-current"
cargo build -q -p nodewright-e2e --bin bench-ops
exec target/debug/bench-ops "$out/nodewright-current" "$out/nodewright-$rev" "${1:-30}" "${2:-100}"
