#!/usr/bin/env bash
# Writes each example node spec's sha256 into the boot configs that name it, after
# editing a spec: examples/<role>/bootconfig.yaml, and the controller-shim worker's.
set -euo pipefail
cd "$(dirname "$0")/../examples"
set_digest() { # boot-config spec
  local sha
  sha=$(sha256sum "$2" | cut -d' ' -f1)
  sed -i -E "s/^(  sha256: )[0-9a-f]{64}$/\1$sha/" "$1"
  echo "$1: $sha"
}
for dir in */; do
  dir=${dir%/}
  [ -f "$dir/nodespec.yaml" ] && [ -f "$dir/bootconfig.yaml" ] || continue
  set_digest "$dir/bootconfig.yaml" "$dir/nodespec.yaml"
done
set_digest controller-shim/worker-bootconfig.yaml worker/nodespec.yaml
