#!/usr/bin/env bash
# No leaks on error paths: a four-stage pipeline (grpo with a reference and minibatches, fkl top-k, opd with
# λ = 1.25, sft; eval, checkpoints, HDF5 and TensorBoard logs at every step) is run once per fault point of the
# sanitizer build (src/core/fault_point.h: S2D_FAULT_AT=N fails the Nth allocation or I/O step a run reaches).
# Every injected failure must end in the error naming that point, exit 1, and no LeakSanitizer or sanitizer
# report (die() runs the leak check in that build). The same for every point of a --resume that restores two
# stage outputs from the checkpoint and continues a third mid-stage.
. "$(dirname "$0")/lib.sh"
cd "$WORK" || exit 1
export S2D_LOG=warn OMP_NUM_THREADS=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
cat > cfg.yaml <<YAML
seed: 3
prompt: {template: qwen3, instruction: ""}
logging: {rollouts: true, metrics_h5: true, tensorboard: true}
models:
  teacher: {path: $S2D_ROOT/tests/fixtures/models/tiny-teacher}
  student: {path: $S2D_ROOT/tests/fixtures/models/tiny-student}
datasets:
  train: {task: arith, split: train, size: 40, seed: 1, ops: 2, max_operand: 5}
  test: {task: arith, split: test, size: 8, seed: 1, ops: 2, max_operand: 5}
defaults: &stage
  steps: 1
  prompts_per_step: 2
  group_size: 2
  sampling: {temperature: 1.0, max_new_tokens: 8}
  optimizer: {lr: 1.0e-3, clip: 1.0}
  eval: {data: test, problems: 2, max_new_tokens: 8, every: 1}
  checkpoint: {every: 1}
pipeline:
  - {<<: *stage, steps: 2, name: a_grpo, algo: grpo, policy: teacher, data: train, minibatches: 2, grpo: {kl_beta: 0.01}}
  - {<<: *stage, name: b_fkl, algo: fkl, policy: student, teacher: a_grpo, data: train, group_size: 1, fkl: {mode: topk, topk: 4}}
  - {<<: *stage, steps: 2, name: c_opd, algo: opd, policy: b_fkl, teacher: a_grpo, data: train, opd: {lambda: 1.25}}
  - {<<: *stage, name: d_sft, algo: sft, policy: c_opd, data: train}
YAML
S2D_FAULT_AT=count "$S2D" train cfg.yaml --out full > full.log 2>&1
rc=$?
n=$(sed -n 's/^s2d: fault points reached: \([0-9]*\)$/\1/p' full.log)
check "the run without a failure succeeds (rc $rc)" test "$rc" -eq 0
if [ -z "$n" ]; then
  fail "no fault point count: \$S2D ($S2D) is not the sanitizer build (make build/s2d-san)"
  summary; exit
fi
check "the pipeline reaches many fault points ($n)" test "$n" -ge 60
# judge LABEL LOG RC N: runs 1..N (their logs LOGk, exit codes in RCk) each ended in the error naming its
# point, exit 1, no sanitizer report
judge() {
  local label=$1 log=$2 rcf=$3 n=$4 bad=0 why k
  for k in $(seq 1 "$n"); do
    why=""
    [ "$(cat "$rcf$k")" = 1 ] || why="exit $(cat "$rcf$k"), expected 1"
    grep -q "injected failure at fault point $k (" "$log$k" || why="$why; no error naming point $k"
    grep -qE "LeakSanitizer|ERROR: AddressSanitizer|runtime error:" "$log$k" && why="$why; sanitizer report"
    if [ -n "$why" ]; then
      bad=1
      fail "${label}fault point $k ($(grep -o 'fault point [0-9]* ([^)]*)' "$log$k" | head -1)): $why"
      sed 's/^/    | /' "$log$k" | grep -vE '^\s*\|\s*$' | head -20 >&2
    fi
  done
  [ $bad = 0 ] && ok
}
# each point in its own run, two at a time
one() {
  local k=$1
  S2D_FAULT_AT=$k "$S2D" train cfg.yaml --out "o$k" > "log$k" 2>&1
  echo $? > "rc$k"
}
export -f one
export S2D
seq 1 "$n" | xargs -P 2 -I{} bash -c 'one {}'
judge "" log rc "$n"
# --resume: a run stopped inside c_opd (global step 4) continues with a and b restored from the checkpoint and
# c resumed mid-stage; every point of the resumed run fails in turn, on a copy of the stopped OUT
"$S2D" train cfg.yaml --out stopped --set fault.stop_after_step=4 > stopped.log 2>&1
check "the run stops inside c_opd" bash -c "ls stopped/checkpoints | grep -q '^ckpt-02-000000001' && ! test -e stopped/models/d_sft"
cp -r stopped rcount
S2D_FAULT_AT=count "$S2D" train cfg.yaml --out rcount --resume > rcount.log 2>&1
rc=$?
nr=$(sed -n 's/^s2d: fault points reached: \([0-9]*\)$/\1/p' rcount.log)
check "the resumed run without a failure succeeds (rc $rc)" test "$rc" -eq 0
check "the resumed run reaches fault points (${nr:-none})" test "${nr:-0}" -ge 20
resume_one() {
  local k=$1
  cp -r stopped "r$k"
  S2D_FAULT_AT=$k "$S2D" train cfg.yaml --out "r$k" --resume > "rlog$k" 2>&1
  echo $? > "rrc$k"
}
export -f resume_one
seq 1 "${nr:-0}" | xargs -P 2 -I{} bash -c 'resume_one {}'
judge "resume, " rlog rrc "${nr:-0}"
for site in "restore a stage output" "resume mid-stage"; do
  check "a point stands before: $site" grep -qh "($site)" rlog*
done
# the points cover the stage's resources and its I/O
for site in "the step buffers" "the learner" "the generator" "the teacher workspace" "the reference workspace" \
            "encode the stage data" "the eval generator" "scoring" "the HDF5 logs" "save the model" "the checkpoint" \
            "TensorBoard" "load a tokenizer" "commit metrics.jsonl"; do
  check "a point stands before: $site" grep -qh "($site)" log*
done
summary
