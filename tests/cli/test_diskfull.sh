#!/usr/bin/env bash
# s2d train on a full disk: a 2 MB tmpfs fills while a checkpoint is written (checkpoint.every=1). The run
# must stop with the error and a non-zero status (not a crash in HDF5's exit-time close of the half-written
# file, issue 13), and leave no temp files behind. Skips (loudly) where tmpfs cannot be mounted (not root).
. "$(dirname "$0")/lib.sh"
cd "$S2D_ROOT" || exit 1
export OMP_NUM_THREADS=1
mkdir -p "$WORK/mnt"
if ! mount -t tmpfs -o size=2m tmpfs "$WORK/mnt" 2>"$WORK/mount.err"; then
  echo "SKIP: cannot mount a tmpfs here ($(cat "$WORK/mount.err")): disk-full checks skipped"
  summary; exit
fi
trap 'umount "$WORK/mnt" 2>/dev/null; rm -rf "$WORK"' EXIT
SETS=()
for i in 0 1 2 3; do
  SETS+=(--set "pipeline[$i].steps=3" --set "pipeline[$i].prompts_per_step=8" --set "pipeline[$i].checkpoint.every=1")
done
"$S2D" train configs/tests/tiny-pipeline.yaml "${SETS[@]}" --out "$WORK/mnt/run" >/dev/null 2>"$WORK/err"
rc=$?
check "disk full: exit status is an error, not a crash (got $rc)" test $rc -ne 0 -a $rc -lt 128
check "disk full: the error is printed" grep -q "s2d: error" "$WORK/err"
check "disk full: the error names the file being written" grep -qE "$WORK/mnt/run/[^ ]*: " "$WORK/err"
check "disk full: no temp files left" bash -c "! find '$WORK/mnt/run' -name '*.tmp.*' | grep -q ."
summary
