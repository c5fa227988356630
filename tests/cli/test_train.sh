#!/usr/bin/env bash
# s2d train: the four-stage tiny pipeline end to end (metrics, label accounting, saved models), start-up
# validation of bad configs, --set overrides, and --dry-run of every shipped pipeline config.
. "$(dirname "$0")/lib.sh"
cd "$S2D_ROOT" || exit 1
out=$WORK/run
if "$S2D" train configs/tests/tiny-pipeline.yaml --out "$out" --set pipeline[0].steps=2 >"$WORK/stdout" 2>"$WORK/stderr"; then
  ok
  m=$out/metrics.jsonl
  for st in teacher_rl bridge_fkl bridge_opd student_rl; do
    check "$st has step lines" grep -q "\"stage\": \"$st\", \"algo\"" "$m"
    check "$st has a labels line" grep -q "\"stage\": \"$st\", \"event\": \"labels\"" "$m"
    check "$st saved an HF dir" test -s "$out/models/$st/model.safetensors" -a -s "$out/models/$st/config.json" \
      -a -s "$out/models/$st/tokenizer.json"
  done
  check "--set took effect (2 teacher_rl steps)" test "$(grep -c '"stage": "teacher_rl", "algo"' "$m")" = 2
  check "every loss is finite" python3 -c "
import json, math, sys
rows = [json.loads(l) for l in open('$m')]
steps = [r for r in rows if 'loss' in r]
assert len(steps) == 2 + 32 + 32 + 32, len(steps)
assert all(r['loss'] is not None and math.isfinite(r['loss']) for r in steps)
for r in steps: assert r['tokens'] > 0 and r['gen_s'] >= 0 and 'reward_mean' in r
lab = {r['stage']: r for r in rows if r.get('event') == 'labels'}
# grpo stages consume labelled examples (64 prompts per step); the bridge uses prompts only
assert lab['teacher_rl']['labelled_total'] == 128 and lab['teacher_rl']['unlabelled_prompts'] == 0, lab
assert lab['bridge_fkl']['labelled_total'] == 0 and lab['bridge_fkl']['unlabelled_prompts'] == 2048, lab
assert lab['bridge_opd']['labelled_total'] == 0 and lab['bridge_opd']['unlabelled_prompts'] == 2048, lab
# student_rl cycles through the 150 held-out problems: every use is counted, each problem once as unique
assert lab['student_rl']['labelled_total'] == 2048 and lab['student_rl']['labelled_unique'] == 150, lab
# the pre-trained teacher earns real rewards, and its second minibatch per step is off-policy: PPO clipping acts
t = [r for r in steps if r['stage'] == 'teacher_rl']
assert any(r['reward_mean'] > 0 for r in t), [r['reward_mean'] for r in t]
assert any(r['clip_fraction'] > 0 for r in t), [r['clip_fraction'] for r in t]
assert all(r['clip_fraction'] == 0 for r in steps if r['stage'] == 'student_rl'), 'one minibatch: on-policy, no clipping'
"
  check "resolved config written and reloadable" "$S2D" train "$out/config.yaml" --dry-run --out "$WORK/x"
  check "resolved config holds the override" grep -q "steps: 2" "$out/config.yaml"
  check "summary table on stdout" grep -q "^student_rl" "$WORK/stdout"
  check "start-up line: backend, threads per rank, layout, resolved config" \
    grep -qE "backend cpu \(cpu: .*, fp32 \(OpenBLAS [A-Za-z0-9]+ kernels\), AVX-512 (on|off)\), [0-9]+ threads? per rank \(.*\), OMP_WAIT_POLICY .*; layout single \(1 rank, every role in this process\); resolved config $out/config.yaml" "$WORK/stderr"
  check "progress lines on stderr" grep -q "\[bridge_opd\] step 32/32 .*ETA" "$WORK/stderr"
  check "the student differs from its start" bash -c "! cmp -s '$out/models/bridge_fkl/model.safetensors' '$out/models/bridge_opd/model.safetensors'"
else
  fail "tiny pipeline run: $(tail -5 "$WORK/stderr")"
fi

# bad configs fail at start-up, before any output
cfg=configs/tests/tiny-pipeline.yaml
expect_error "unknown algo" "pipeline\[1\]\.algo.*(sft|grpo)" "$S2D" train $cfg --out "$WORK/b1" --set pipeline[1].algo=ppo
expect_error "model that does not exist yet" "pipeline\[1\]\.teacher: model 'student_rl' does not exist \(yet\)" \
  "$S2D" train $cfg --out "$WORK/b2" --set pipeline[1].teacher=student_rl
expect_error "teacher vocabulary differs" "vocabulary of 1024 tokens.*shared vocabulary" \
  "$S2D" train $cfg --out "$WORK/b3" --set 'models.teacher={init: {preset: qwen3-tiny, vocab_size: 1024}, tokenizer: configs/demo/tokenizer}'
expect_error "wrong type via --set" "steps.*integer" "$S2D" train $cfg --out "$WORK/b4" --set pipeline[0].steps=many
printf 'seed: 1\nmodels: {}\ndatasets: {}\npipeline:\n  - name: a\n    algoo: sft\n' >"$WORK/typo.yaml"
expect_error "unknown key names file:line:col" "typo.yaml:[0-9]+:[0-9]+" "$S2D" train "$WORK/typo.yaml" --out "$WORK/b5"
expect_error "fkl needs a teacher" "algo fkl needs a 'teacher'" "$S2D" train $cfg --out "$WORK/b6" --set pipeline[1].teacher=null
# stage and output names become paths (OUT/models/<name>): '.', '..' and '/' are refused with the key path
expect_error "stage name '.'" "pipeline\[0\]\.name: stage name '\.' is not allowed" \
  "$S2D" train $cfg --out "$WORK/b7" --set 'pipeline[0].name=.' --set pipeline[0].output=teacher_rl
expect_error "stage name '..'" "pipeline\[0\]\.name: stage name '\.\.' is not allowed" \
  "$S2D" train $cfg --out "$WORK/b7" --set 'pipeline[0].name=..'
expect_error "output name '..'" "pipeline\[2\]\.output: output name '\.\.' is not allowed" \
  "$S2D" train $cfg --out "$WORK/b7" --set 'pipeline[2].output=..'
expect_error "stage name with '/'" "pipeline\[0\]\.name: stage name 'a/b' may hold only" \
  "$S2D" train $cfg --out "$WORK/b7" --set 'pipeline[0].name=a/b'
check "no output from refused names" test ! -e "$WORK/b7"
check "no output from failed starts" test ! -e "$WORK/b1/metrics.jsonl" -a ! -e "$WORK/b3" 

# every shipped pipeline validates
for f in configs/pipelines/*.yaml configs/demo/demo.yaml; do
  [ -f "$f" ] || continue
  check "dry run $f" "$S2D" train "$f" --dry-run --out "$WORK/dry"
done
summary
