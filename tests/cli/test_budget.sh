#!/usr/bin/env bash
# The pieces the arm comparisons stand on: OUT/budget.json (labels per stage, RL and SFT apart, unique by
# content across stages and datasets; rollouts, tokens and FLOPs by their formulas), labels.max caps (refused
# before training from the config, or stopped when refill rounds go over), DAPO refill (more generation rounds,
# deterministic, resumable), grpo.std and the reference that cannot act (config errors naming the key).
. "$(dirname "$0")/lib.sh"
root=$S2D_ROOT
cd "$WORK" || exit 1
# sft on train; grpo with refill on heldout; grpo on heldout2, the same 20 problems under another name
cat >b.yaml <<EOF
seed: 5
prompt: {template: qwen3, instruction: ""}
models:
  student: {path: $root/tests/fixtures/models/tiny-student}
datasets:
  train: {task: arith, split: train, size: 40, seed: 1, ops: 2, max_operand: 5}
  heldout: {task: arith, split: heldout, size: 20, seed: 1, ops: 2, max_operand: 5}
  heldout2: {task: arith, split: heldout, size: 20, seed: 1, ops: 2, max_operand: 5}
defaults: &stage
  prompts_per_step: 10
  group_size: 4
  sampling: {temperature: 0.8, max_new_tokens: 12}
  optimizer: {lr: 5.0e-4}
pipeline:
  - <<: *stage
    name: sft
    algo: sft
    policy: student
    data: train
    steps: 1
  - <<: *stage
    name: rl_refill
    algo: grpo
    policy: sft
    data: heldout
    steps: 2
    grpo: {dynamic_sampling: {mode: refill, max_rounds: 3}}
    checkpoint: {every: 1}
  - <<: *stage
    name: rl_again
    algo: grpo
    policy: rl_refill
    data: heldout2
    steps: 2
    grpo: {std: population}
EOF
if "$S2D" train b.yaml --out run1 >run1.out 2>run1.err; then
  ok
  check "budget table on stdout" grep -qE "^budget:$" run1.out
  check "budget rows indented (lines that start with a stage name are the summary's)" \
    bash -c "grep -qE '^  rl_refill +grpo +rl ' run1.out && test \$(grep -c '^rl_refill' run1.out) = 1"
  check "labels line on stdout" grep -qE "^  labels: [0-9]+ RL \(20 unique\), 10 SFT \(10 unique\)" run1.out
  check "budget.json: labels, rounds, tokens and FLOPs" python3 - run1 <<'EOF'
import json, sys
d = sys.argv[1]
b = json.load(open(d + '/budget.json'))
rows = [json.loads(l) for l in open(d + '/metrics.jsonl')]
st = {s['name']: s for s in b['stages']}
tot = b['total']
assert b['version'] == 1
sft, rf, ag = st['sft'], st['rl_refill'], st['rl_again']
assert sft['label_kind'] == 'sft' and sft['labels_total'] == 10 and sft['labels_unique'] == 10, sft
assert sft['rollouts'] == 0 and sft['flops_generate'] == 0 and sft['generation_rounds'] == 0, sft
assert rf['label_kind'] == 'rl' and ag['label_kind'] == 'rl'
# refill: every round hands out prompts_per_step prompts (their answers are checked) and samples 4 each
assert rf['steps'] == 2 and rf['generation_rounds'] >= 2, rf
assert rf['labels_total'] == 10 * rf['generation_rounds'] and rf['rollouts'] == 40 * rf['generation_rounds'], rf
assert ag['generation_rounds'] == 2 and ag['labels_total'] == 20 and ag['labels_unique'] == 20, ag
# unique by content: heldout and heldout2 are the same 20 problems, so the pipeline counts 20, not 40
assert tot['rl_labels_unique'] == 20 and tot['rl_labels_total'] == rf['labels_total'] + 20, tot
assert tot['sft_labels_total'] == 10 and tot['sft_labels_unique'] == 10 and tot['labels_unique'] == 30, tot
assert b['datasets']['heldout']['labelled_unique'] == 20 and b['datasets']['heldout2']['labelled_unique'] == 20
for name, s in st.items():
    steps = [r for r in rows if r.get('stage') == name and 'loss' in r]
    assert len(steps) == s['steps'], (name, len(steps))
    assert s['trained_tokens'] == sum(r['trained_tokens'] for r in steps), name
    assert s['batch_tokens'] == sum(r['tokens'] for r in steps), name
    assert s['rollout_tokens'] == sum(r['generated_tokens'] for r in steps), name
    N = s['params_policy']
    assert N > 0 and s['params_generator'] == (N if name != 'sft' else 0), s
    def close(a, want): assert abs(a - want) <= 1e-6 * max(1.0, abs(want)), (name, a, want)
    close(s['flops_train'], 6 * N * s['batch_tokens'])
    close(s['flops_generate'], 2 * s['params_generator'] * (s['prompt_tokens'] + s['rollout_tokens']))
    close(s['flops_score'], 0)  # no teacher, no reference (kl_beta 0)
    close(s['flops_total'], s['flops_generate'] + s['flops_score'] + s['flops_train'])
# refill trains only groups whose rewards differ (zero-variance groups fill in masked when rounds run out)
rfs = [r for r in rows if r.get('stage') == 'rl_refill' and 'loss' in r]
assert all(r['generated_tokens'] >= 1 for r in rfs)
EOF
  check "resolved config: grpo.std and dynamic_sampling written" grep -q "std: population" run1/config.yaml
  check "resolved config: refill" grep -q "mode: refill" run1/config.yaml
else
  fail "budget run: $(tail -5 run1.err)"
fi
# deterministic: the same run gives the same budget and metrics
"$S2D" train b.yaml --out run2 >/dev/null 2>&1
check "refill is deterministic" python3 - run1 run2 <<'EOF'
import json, sys
def load(d):
    out = []
    for l in open(d + '/metrics.jsonl'):
        r = json.loads(l)
        out.append({k: v for k, v in r.items() if not (k.endswith('_s') or k.startswith('busy'))})
    return out, open(d + '/budget.json').read()
assert load(sys.argv[1]) == load(sys.argv[2])
EOF
# resumed mid-stage (inside the refill stage) ends with the uninterrupted run's budget
"$S2D" train b.yaml --out run3 --set fault.stop_after_step=2 >/dev/null 2>&1
check "resume after a stop keeps the budget" bash -c "'$S2D' train b.yaml --out run3 --resume >/dev/null 2>&1 && cmp run1/budget.json run3/budget.json"

# caps: refused before training when the config says so, with the key
expect_error "stage labels.max below what the stage hands out" "pipeline\[2\]\.labels\.max: stage rl_again hands out 20 unique" \
  "$S2D" train b.yaml --out cap1 --set 'pipeline[2].labels={max: 19}'
check "no training before the cap error" test ! -e cap1/checkpoints/ckpt-00-000000001.h5
expect_error "pipeline labels.max" "labels\.max: the grpo stages hand out at least 20 unique .* labels\.max is 15" \
  "$S2D" train b.yaml --out cap2 --set 'labels={max: 15}'
expect_error "labels.max on a stage without labels" "labels\.max: a fkl stage uses prompts only" \
  "$S2D" train "$root/configs/tests/tiny-pipeline.yaml" --dry-run --out cap3 --set 'pipeline[1].labels={max: 5}'
# a cap the plan meets (2 steps x 10 prompts = 20 of train's 40) but refill rounds go over: stopped when it happens
expect_error "refill over the stage cap stops the run" "pipeline\[1\]\.labels\.max: stage rl_refill has handed out [23][0-9] unique labelled examples, over its cap of 20" \
  "$S2D" train b.yaml --out cap4 --set 'pipeline[1].labels={max: 20}' --set pipeline[1].data=train

# refill keeps groups by the built-in verifier: a reward command there is refused
expect_error "refill with a reward command" "refill selects groups with the built-in verifier and cannot use reward\.command" \
  "$S2D" train b.yaml --dry-run --out cmdrefill --set 'pipeline[1].reward={command: "cat"}'
# refill rounds are synchronous: with rollouts sampled ahead (runtime.max_policy_lag) they are refused up front
expect_error "refill with a policy lag" "grpo\.dynamic_sampling\.mode: refill cannot run with runtime\.max_policy_lag 1" \
  "$S2D" train b.yaml --dry-run --out lagrefill --set runtime.max_policy_lag=1

# config errors that name the key
cfg=$root/configs/tests/tiny-pipeline.yaml
expect_error "reference with lambda = 1 cannot act" "pipeline\[2\]\.reference: with opd\.lambda = 1 the reference cancels" \
  "$S2D" train $cfg --dry-run --out e1 --set pipeline[2].reference=teacher --set pipeline[2].opd.lambda=1
# opd.mode full / topk: the per-position objective (γ = 0) over a token mean
expect_error "opd.mode full with a discount" "pipeline\[2\]\.opd: mode full takes the per-position reverse KL \(γ = 0\)" \
  "$S2D" train $cfg --dry-run --out e3 --set pipeline[2].opd.mode=full --set pipeline[2].opd.gamma=0.5
expect_error "opd.mode topk with another aggregation" "pipeline\[2\]\.opd: mode topk averages over trained tokens and needs opd\.agg: token-mean" \
  "$S2D" train $cfg --dry-run --out e4 --set pipeline[2].opd.mode=topk --set pipeline[2].opd.agg=seq-mean-token-mean
expect_error "opd.mode unknown" "opd\.mode.*(full|topk|sampled)" \
  "$S2D" train $cfg --dry-run --out e5 --set pipeline[2].opd.mode=exact
check "dry run shows opd.mode and opd.topk" bash -c "'$S2D' train $cfg --dry-run --out e6 --set pipeline[2].opd.mode=topk 2>&1 | grep -A12 'name: bridge_opd' | grep -qE 'mode: topk'"
expect_error "grpo reference without kl_beta" "pipeline\[0\]\.reference: grpo uses a reference only for the KL penalty" \
  "$S2D" train $cfg --dry-run --out e2 --set pipeline[0].reference=teacher --set pipeline[0].grpo.kl_beta=0
check "reference with lambda != 1 is fine" "$S2D" train $cfg --dry-run --out e3 --set pipeline[2].reference=teacher
expect_error "grpo.std and std_normalize together" "grpo\.std: give grpo\.std or the older grpo\.std_normalize, not both" \
  "$S2D" train $cfg --dry-run --out e4 --set pipeline[0].grpo.std=none --set pipeline[0].grpo.std_normalize=true
expect_error "grpo.std value" "std.*(unbiased|population|none)" "$S2D" train $cfg --dry-run --out e5 --set pipeline[0].grpo.std=sample
expect_error "refill needs rewards" "pipeline\[2\]\.grpo\.dynamic_sampling: refill needs rewards" \
  "$S2D" train $cfg --dry-run --out e6 --set 'pipeline[2].grpo.dynamic_sampling={mode: refill}'
expect_error "filter_zero_variance contradicts dynamic_sampling" "filter_zero_variance: true contradicts dynamic_sampling\.mode off" \
  "$S2D" train $cfg --dry-run --out e7 --set pipeline[0].grpo.filter_zero_variance=true --set 'pipeline[0].grpo.dynamic_sampling={mode: off}'
"$S2D" train $cfg --dry-run --out e8 --set pipeline[0].grpo.std_normalize=false >e8.out 2>&1
check "std_normalize kept as written, no std beside it; the other stages get std: unbiased" \
  bash -c "grep -q 'std_normalize: false' e8.out && test \$(grep -c 'std: unbiased' e8.out) = 3"
summary
