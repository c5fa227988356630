#!/usr/bin/env bash
# make bench: runs every tools/bench/bench_*.sh section; each prints its own numbers and ratios.
set -u
build=${1:-build}
export S2D_BUILD="$build"
status=0
for s in tools/bench/bench_*.sh; do
  [ -f "$s" ] || continue
  echo "== $(basename "$s" .sh) =="
  bash "$s" "$build" || status=1
  echo
done
exit $status
