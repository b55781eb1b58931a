#!/usr/bin/env bash
# Writes each example node spec's sha256 into its boot config, after editing a spec.
set -euo pipefail
cd "$(dirname "$0")/../examples"
for dir in */; do
  dir=${dir%/}
  [ -f "$dir/nodespec.yaml" ] && [ -f "$dir/bootconfig.yaml" ] || continue
  sha=$(sha256sum "$dir/nodespec.yaml" | cut -d' ' -f1)
  sed -i -E "s/^(  sha256: )[0-9a-f]{64}$/\1$sha/" "$dir/bootconfig.yaml"
  echo "$dir: $sha"
done
# The controller-shim worker example serves the worker's spec.
sha=$(sha256sum worker/nodespec.yaml | cut -d' ' -f1)
sed -i -E "s/^(  sha256: )[0-9a-f]{64}$/\1$sha/" controller-shim/worker-bootconfig.yaml
echo "controller-shim: $sha"
