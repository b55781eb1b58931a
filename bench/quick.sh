#!/usr/bin/env bash
# Runs every benchmark in quick mode (bench/README.md): one iteration, small inputs, the
# test build's binaries. Fails when a script fails or prints no table; never looks at a
# time. scripts/test.sh runs it after the tests (the booted scripts need root).
#   bench/quick.sh [SCRIPT...]   (default: every bench/*.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts=("$@")
if [ ${#scripts[@]} -eq 0 ]; then
  for s in bench/*.sh; do
    case "$s" in bench/lib.sh | bench/quick.sh) continue ;; esac
    scripts+=("$s")
  done
fi
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
all_started=$(date +%s)
skipped=0
for script in "${scripts[@]}"; do
  name=$(basename "$script" .sh)
  # The booted scripts need root, as the booted tests do; like them they skip without
  # it, unless every test must run (NODEWRIGHT_REQUIRE_ALL=1, as in CI).
  if grep -q 'Needs root' "$script" && [ "$(id -u)" -ne 0 ] && [ "${NODEWRIGHT_REQUIRE_ALL:-}" != 1 ]; then
    echo "skip $script --quick: needs root"
    skipped=$((skipped + 1))
    continue
  fi
  started=$(date +%s)
  status=0
  "$script" --quick >"$logs/$name" 2>&1 || status=$?
  took=$(($(date +%s) - started))
  if [ "$status" -ne 0 ]; then
    failed+=("$name")
    echo "FAIL $script --quick: exit $status (${took}s); its output:"
    tail -40 "$logs/$name" | sed 's/^/  /'
  elif ! grep -q '^|---' "$logs/$name"; then
    failed+=("$name")
    echo "FAIL $script --quick: no table in its output (${took}s); its output:"
    tail -40 "$logs/$name" | sed 's/^/  /'
  else
    echo "ok   $script --quick (${took}s)"
  fi
done
echo "quick benchmarks: $((${#scripts[@]} - ${#failed[@]} - skipped)) of ${#scripts[@]} passed, $skipped skipped, ${#failed[@]} failed, $(($(date +%s) - all_started))s"
[ ${#failed[@]} -eq 0 ]
