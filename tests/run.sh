#!/usr/bin/env bash
# Runs every test binary (built with ASan+UBSan) and every CLI test script, then prints the totals as
# "N passed, N failed". Usage: tests/run.sh BUILD_DIR [filter]
# CLI scripts run on BUILD_DIR/s2d-san (s2d with ASan+UBSan; leaks inside libhdf5 suppressed by tests/lsan.supp)
# when it is built, except the long training ones and those that time s2d (SAN_SKIP: timing figures, MPI), which
# use BUILD_DIR/s2d.
set -u
build=${1:-build}
filter=${2:-}
export S2D="$PWD/$build/s2d" S2D_ROOT="$PWD" S2D_TMP="${TMPDIR:-/tmp}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp}
SAN_SKIP=" test_mpi.sh test_mpi_blame.sh test_slurm.sh test_resume.sh test_train.sh test_config_bombs.sh test_overlap.sh "
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# Sleeping (not spinning) OpenMP waits: tests share 2 cores with MPI ranks and each other.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
passed=0 failed=0 broken=()
run_one() { # name, command...
  local name=$1; shift
  local log; log=$(mktemp)
  local t0=$SECONDS
  timeout 600 "$@" >"$log" 2>&1
  local rc=$?
  local res; res=$(grep '^RESULT ' "$log" | tail -1)
  local p=0 f=0
  if [ -n "$res" ]; then p=$(echo "$res" | awk '{print $3}'); f=$(echo "$res" | awk '{print $4}'); fi
  if [ $rc -ne 0 ] && [ "$f" = 0 ]; then f=1; fi   # a crash or bad exit counts as a failure
  passed=$((passed + p)); failed=$((failed + f))
  printf '%-34s %4d passed %3d failed  %3ds\n' "$name" "$p" "$f" $((SECONDS - t0))
  if [ "$f" != 0 ]; then broken+=("$name"); sed 's/^/    | /' "$log" | tail -40; fi
  rm -f "$log"
}
for t in "$build"/tests/test_*; do
  [ -x "$t" ] || continue
  case "$(basename "$t")" in *"$filter"*) run_one "$(basename "$t")" "$t" ;; esac
done
for s in tests/cli/test_*.sh; do
  [ -f "$s" ] || continue
  b=$(basename "$s")
  bin="$PWD/$build/s2d"
  [ -x "$PWD/$build/s2d-san" ] && [[ "$SAN_SKIP" != *" $b "* ]] && bin="$PWD/$build/s2d-san"
  label=$b; [ "$bin" = "$PWD/$build/s2d-san" ] && label="$b [asan]"
  case "$b" in *"$filter"*) S2D=$bin run_one "$label" bash "$s" ;; esac
done
echo
[ ${#broken[@]} -gt 0 ] && echo "failing: ${broken[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
