#!/usr/bin/env bash
# Checks that every selection of the workspace's packages builds its dependencies with
# the features the workspace build uses (workspace-hack/Cargo.toml), so `-p X`, the
# dist build and the test build never rebuild hyper, smithy or the AWS SDK twice. On a
# difference it prints the dependency and the features to ask for in workspace-hack.
# Only resolves (cargo tree): takes seconds. scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-musl
members=(nodewright nodewright-shim nodewright-e2e)
# The workspace crates themselves may differ (the agent uses the shim's library
# without its server); they are rebuilt in seconds, and the hack cannot name them.
own='^(nodewright|nodewright-shim|nodewright-e2e|workspace-hack) v'
features() { # cargo tree arguments -> "package version [features]" lines
  cargo tree --locked --target "$TARGET" --prefix none -f '{p} [{f}]' "$@" |
    sed 's/ (\*)//; s/ (proc-macro)//' | grep -Ev "$own" | sort -u
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
features --workspace -e normal,build,dev >"$tmp/workspace"
bad=0
for mask in 1 2 3 4 5 6 7; do
  selection=()
  for i in 0 1 2; do
    if [ $((mask >> i & 1)) = 1 ]; then selection+=(-p "${members[$i]}"); fi
  done
  for edges in normal,build normal,build,dev; do
    extra=$(features "${selection[@]}" -e "$edges" | comm -23 - "$tmp/workspace")
    if [ -n "$extra" ]; then
      bad=1
      echo "${selection[*]} (-e $edges) builds these with other features than the workspace:"
      while read -r name _; do
        echo "  $name: the workspace's $(grep "^$name v" "$tmp/workspace" | tr '\n' ' ')"
      done <<<"$extra"
    fi
  done
done
if [ "$bad" = 1 ]; then
  echo "error: add those features to workspace-hack/Cargo.toml" >&2
  exit 1
fi
echo "one feature set: every package selection builds the workspace's dependencies"
