#!/usr/bin/env bash
# Small things of a finished run (issue 12, item 8): the progress line of fkl/opd stages shows "-" for reward
# and accuracy (never nan); --resume of a finished run reports no negative time; s2d inspect prints the stage
# summaries in a checkpoint's /state as numbers (not uint64 bit patterns); `make test T=word` builds the unit-test
# binaries that the matching CLI tests call.
. "$(dirname "$0")/lib.sh"
cd "$S2D_ROOT" || exit 1
export OMP_NUM_THREADS=1
cfg=configs/tests/tiny-pipeline.yaml
SETS=()
for i in 0 1 2 3; do SETS+=(--set "pipeline[$i].steps=2" --set "pipeline[$i].prompts_per_step=8" --set "pipeline[$i].eval.problems=8"); done
out=$WORK/run
if "$S2D" train $cfg "${SETS[@]}" --out "$out" >"$WORK/stdout" 2>"$WORK/stderr"; then
  ok
  check "fkl progress line: reward - acc -" grep -q '^\[bridge_fkl\] step 1/2 | reward - acc - | kl ' "$WORK/stderr"
  check "opd progress line: reward - acc -" grep -q '^\[bridge_opd\] step 2/2 | reward - acc - | kl ' "$WORK/stderr"
  check "grpo progress line keeps numbers" grep -qE '^\[teacher_rl\] step 1/2 \| reward [0-9.]+ acc [0-9.]+ \|' "$WORK/stderr"
  check "no nan on any progress line" bash -c "! grep -q ' nan ' '$WORK/stderr'"
  check "metrics.jsonl still has null reward for fkl" grep -q '"stage": "bridge_fkl", "algo": "fkl", "step": 1, "global_step": 3, "loss": [0-9.e-]*, "reward_mean": null' "$out/metrics.jsonl"

  # --resume of the finished run: nothing to do, no negative times
  "$S2D" train $cfg "${SETS[@]}" --out "$out" --resume >"$WORK/resume.out" 2>"$WORK/resume.err" || fail "resume of a finished run: $(tail -3 "$WORK/resume.err")"
  check "resumed total line says this session" grep -q "^total [0-9.]* s in this session (resumed" "$WORK/resume.out"
  check "no negative seconds after resume" bash -c "! grep -qE -- '-[0-9]+\.[0-9] s' '$WORK/resume.out'"
  check "the first total line has no negative rest" bash -c "grep '^total' '$WORK/stdout' | grep -qvE -- 'rest -'"

  # inspect: /state/summary.<stage> as numbers
  ck=$(ls "$out"/checkpoints/ckpt-03-*.h5 | tail -1)
  "$S2D" inspect "$ck" >"$WORK/insp.txt" 2>&1 || fail "inspect $ck"
  check "summary of teacher_rl as doubles and counts" grep -qE \
    '^state summary\.teacher_rl: acc_before [0-9.]+(e-?[0-9]+)? acc_after [0-9.]+(e-?[0-9]+)? seconds [0-9.]+(e-?[0-9]+)? gen_s .* labelled_total 16 labelled_unique 16 unlabelled_total 0 unlabelled_unique 0 has_eval 1$' "$WORK/insp.txt"
  check "summary of bridge_fkl counts prompts" grep -q '^state summary\.bridge_fkl: .* labelled_total 0 .* unlabelled_total 16 ' "$WORK/insp.txt"
  check "no 19-digit bit patterns left" bash -c "! grep -E '^state summary.*[0-9]{15,}' '$WORK/insp.txt'"
  check "other state lines unchanged" grep -qE '^state run\.global_step: 8$' "$WORK/insp.txt"
else
  fail "tiny run: $(tail -5 "$WORK/stderr")"
fi

# make test T=export builds build/tests/test_h5io, which tests/cli/test_export.sh runs (dry run of make)
check "T=export builds test_h5io" bash -c "make -n --no-print-directory BUILD='$WORK/b' test T=export 2>/dev/null | grep -q 'tests/unit/test_h5io.c'"
check "T=export builds no unrelated test" bash -c "! make -n --no-print-directory BUILD='$WORK/b' test T=export 2>/dev/null | grep -q 'tests/unit/test_ops.c'"
summary
