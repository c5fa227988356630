#!/usr/bin/env bash
# s2d train and its output directory (issue 13): a fresh run into a non-empty OUT is refused (it used to mix
# with the old run's files, and a later --resume picked the old run's checkpoint) unless --overwrite, which
# removes the old checkpoints and logs; a run or resume removes temp files of dead processes (*.tmp.PID, PID
# not alive: the leftovers of a SIGKILL) and keeps those of live ones.
. "$(dirname "$0")/lib.sh"
cd "$S2D_ROOT" || exit 1
export OMP_NUM_THREADS=1
SETS=()
for i in 0 1 2 3; do SETS+=(--set "pipeline[$i].steps=2" --set "pipeline[$i].prompts_per_step=8"); done
train() { "$S2D" train configs/tests/tiny-pipeline.yaml "${SETS[@]}" "$@"; }
o=$WORK/o
check "first run (stops at global step 3)" train --out "$o" --set fault.stop_after_step=3 >/dev/null 2>"$WORK/1.err"
check "first run: its checkpoint" test -s "$o/checkpoints/ckpt-01-000000001.h5"
expect_error "fresh run into a non-empty OUT is refused" "$o: the output directory is not empty .*--resume .*--overwrite" \
  train --out "$o" --set fault.stop_after_step=1
check "refused run changed nothing" test -s "$o/checkpoints/ckpt-01-000000001.h5" -a ! -e "$o/checkpoints/ckpt-00-000000001.h5"

# temp files: of dead processes (removed) and of a live one (this shell: kept)
sleep 0 & dead=$!; wait $dead
echo x >"$o/metrics.jsonl.tmp.$dead"
echo x >"$o/checkpoints/ckpt-02-000000001.h5.tmp.$dead"
mkdir "$o/models/student_rl.tmp.$dead"; echo x >"$o/models/student_rl.tmp.$dead/model.safetensors.tmp.$dead"
echo x >"$o/models/teacher_rl/config.json.tmp.$dead"
echo x >"$o/rollouts.h5.tmp.$$"
check "resume" train --out "$o" --resume --set fault.stop_after_step=4 >/dev/null 2>"$WORK/2.err"
check "resume: dead temps removed" bash -c "! ls -d '$o'/metrics.jsonl.tmp.$dead '$o'/checkpoints/*.tmp.$dead '$o'/models/*.tmp.$dead '$o'/models/teacher_rl/*.tmp.$dead 2>/dev/null | grep -q ."
check "resume: says so" grep -q "removed 4 temp file(s) left by run(s) that died" "$WORK/2.err"
check "resume: a live process's temp is kept" test -e "$o/rollouts.h5.tmp.$$"
rm -f "$o/rollouts.h5.tmp.$$"

check "--overwrite starts over" train --out "$o" --overwrite --set fault.stop_after_step=1 >/dev/null 2>"$WORK/3.err"
check "--overwrite: the old checkpoints are gone" test ! -e "$o/checkpoints/ckpt-01-000000001.h5" -a ! -e "$o/checkpoints/ckpt-01-000000002.h5"
check "--overwrite: the new run's checkpoint" test -s "$o/checkpoints/ckpt-00-000000001.h5"
check "--overwrite: metrics are the new run's only" test "$(grep -c '"algo"' "$o/metrics.jsonl")" -eq 1
check "resume after --overwrite continues the new run" bash -c "'$S2D' train configs/tests/tiny-pipeline.yaml ${SETS[*]} --out '$o' --resume --set fault.stop_after_step=2 2>&1 | grep -q 'resuming from .*ckpt-00-000000001.h5'"
# missing inputs are found before anything is written (and --dry-run warns about them)
expect_error "missing tokenizer: error before output" "models\.teacher\.tokenizer: .*nothere: cannot open" \
  train --out "$WORK/m1" --set models.teacher.tokenizer="$WORK/nothere"
expect_error "missing dataset file: error before output" "datasets\.train\.file: .*missing\.jsonl: cannot open" \
  train --out "$WORK/m2" --set "datasets.train={file: $WORK/missing.jsonl, format: math}"
check "missing inputs: no output directory" test ! -e "$WORK/m1" -a ! -e "$WORK/m2"
check "--dry-run warns about a missing dataset file" bash -c "'$S2D' train configs/tests/tiny-pipeline.yaml --dry-run \
  --set 'datasets.train={file: $WORK/missing.jsonl, format: math}' 2>&1 >/dev/null | grep -q 'warn.*missing.jsonl: cannot open'"
expect_error "fkl.topk beyond the teacher's vocabulary: error before output" \
  "pipeline\[1\]\.fkl\.topk: 600 is more than the teacher 'teacher' vocabulary of 512" train --out "$WORK/m3" --set pipeline[1].fkl.topk=600
expect_error "max_new_tokens beyond the model: error before output" \
  "pipeline\[0\]\.sampling\.max_new_tokens: 5000 leaves no room for a prompt in model 'teacher'" \
  train --out "$WORK/m4" --set pipeline[0].sampling.max_new_tokens=5000
printf '{"problem": "1+1", "answer": "2"}\nnot json\n' >"$WORK/bad.jsonl"
expect_error "a bad dataset line: error before output" "datasets\.train: .*bad\.jsonl:2: invalid JSON" \
  train --out "$WORK/m5" --set "datasets.train={file: $WORK/bad.jsonl, format: math}"
check "bad dataset line: no output directory" test ! -e "$WORK/m5"
check "size errors: no output directory" test ! -e "$WORK/m3" -a ! -e "$WORK/m4"
expect_error "--dry-run catches fkl.topk beyond the vocabulary" "fkl\.topk: 600 is more than" \
  "$S2D" train configs/tests/tiny-pipeline.yaml --dry-run --set pipeline[1].fkl.topk=600
mkdir "$WORK/empty"
check "an empty OUT is fine" train --out "$WORK/empty" --set fault.stop_after_step=1 >/dev/null 2>&1
summary
