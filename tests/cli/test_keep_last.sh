#!/usr/bin/env bash
# checkpoint.keep_last: N keeps the newest N checkpoints of OUT/checkpoints (by stage, then step), removing older
# ones only after a new one is complete; other files are left alone; 0 (the default) keeps every checkpoint;
# a run stopped and resumed with keep_last still finishes.
. "$(dirname "$0")/lib.sh"
cd "$S2D_ROOT" || exit 1
export OMP_NUM_THREADS=1
cfg=configs/tests/tiny-pipeline.yaml
SETS=()
for i in 0 1 2 3; do
  SETS+=(--set "pipeline[$i].steps=2" --set "pipeline[$i].prompts_per_step=8" --set "pipeline[$i].eval.problems=8"
         --set "pipeline[$i].checkpoint.every=1")
done
KEEP2=()
for i in 0 1 2 3; do KEEP2+=(--set "pipeline[$i].checkpoint.keep_last=2"); done

# keep_last 2: of the 8 checkpoints (two per stage), the last two remain; foreign files stay (--overwrite: OUT
# is not empty)
mkdir -p "$WORK/k2/checkpoints"
touch "$WORK/k2/checkpoints/notes.txt" "$WORK/k2/checkpoints/ckpt-00-000000009.h5.tmp.1"
if "$S2D" train $cfg "${SETS[@]}" "${KEEP2[@]}" --out "$WORK/k2" --overwrite >"$WORK/k2.out" 2>"$WORK/k2.err"; then
  ok
  check "two newest checkpoints kept" test "$(cd "$WORK/k2/checkpoints" && ls ckpt-*.h5 | tr '\n' ' ')" = \
    "ckpt-03-000000001.h5 ckpt-03-000000002.h5 "
  check "other files untouched" test -e "$WORK/k2/checkpoints/notes.txt" -a -e "$WORK/k2/checkpoints/ckpt-00-000000009.h5.tmp.1"
  check "resolved config shows keep_last" grep -q "keep_last: 2" "$WORK/k2/config.yaml"
  "$S2D" train $cfg "${SETS[@]}" "${KEEP2[@]}" --out "$WORK/k2" --resume >/dev/null 2>&1 && ok || fail "resume from the kept checkpoint"
else
  fail "keep_last 2 run: $(tail -3 "$WORK/k2.err")"
fi

# default (0): every checkpoint stays
if "$S2D" train $cfg "${SETS[@]}" --out "$WORK/k0" >/dev/null 2>"$WORK/k0.err"; then
  check "keep_last 0 keeps all 8" test "$(ls "$WORK/k0/checkpoints"/ckpt-*.h5 | wc -l)" = 8
  check "default keep_last in the resolved config" grep -q "keep_last: 0" "$WORK/k0/config.yaml"
else
  fail "default run: $(tail -3 "$WORK/k0.err")"
fi

# stopped mid-run with keep_last 1, then resumed: one checkpoint at every point, the run finishes
K1=()
for i in 0 1 2 3; do K1+=(--set "pipeline[$i].checkpoint.keep_last=1"); done
"$S2D" train $cfg "${SETS[@]}" "${K1[@]}" --set fault.stop_after_step=5 --out "$WORK/k1" >/dev/null 2>"$WORK/k1.err" ||
  fail "stopped run: $(tail -3 "$WORK/k1.err")"
check "stopped: only the newest checkpoint" test "$(cd "$WORK/k1/checkpoints" && ls ckpt-*.h5)" = "ckpt-02-000000001.h5"
if "$S2D" train $cfg "${SETS[@]}" "${K1[@]}" --set fault.stop_after_step=5 --out "$WORK/k1" --resume >"$WORK/k1r.out" 2>"$WORK/k1r.err"; then
  ok
  check "resumed run finished" grep -q "^student_rl" "$WORK/k1r.out"
  check "resumed: only the final checkpoint" test "$(cd "$WORK/k1/checkpoints" && ls ckpt-*.h5)" = "ckpt-03-000000002.h5"
else
  fail "resume with keep_last 1: $(tail -3 "$WORK/k1r.err")"
fi
expect_error "keep_last must be >= 0" "keep_last" "$S2D" train $cfg --dry-run --out "$WORK/bad" --set pipeline[0].checkpoint.keep_last=-1
expect_error "TRL's save_total_limit names keep_last" "did you mean pipeline\[0\]\.checkpoint\.keep_last\?" \
  "$S2D" train $cfg --dry-run --out "$WORK/bad" --set pipeline[0].save_total_limit=2
summary
