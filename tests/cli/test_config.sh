#!/usr/bin/env bash
# s2d train configs: the resolved config (every key with its value, defaults included) in --dry-run and
# OUT/config.yaml, --set defaults.* rejected with a reason, every `--set` example in README.md, "did you mean"
# for verl/TRL key names, and the start-up line on threads (core/threads.h).
. "$(dirname "$0")/lib.sh"
cd "$S2D_ROOT" || exit 1
cfg=configs/tests/tiny-pipeline.yaml

# --dry-run prints the resolved config; it holds defaults the file does not write
"$S2D" train $cfg --dry-run --out "$WORK/d" >"$WORK/dry.txt" 2>"$WORK/dry.err" || fail "dry run: $(cat "$WORK/dry.err")"
sed -n '/^resolved config/,$p' "$WORK/dry.txt" | tail -n +2 >"$WORK/resolved.yaml"
check "dry run prints the resolved config" test -s "$WORK/resolved.yaml"
for key in "agg: token-mean" "beta2: 0.999" "weight_decay: 0.0" "schedule: constant" "top_p: 1.0" \
           "kl_estimator: k3" "std: unbiased" "mode: off" "max_rounds: 4" "eps: 1e-08" "tis_cap: 0.0" "every: 0" "timeout_s: 120.0" \
           "heartbeat_s: 30.0" "generators: 1" "rollouts: true" "template: qwen3" \
           "tokenizer: tests/fixtures/models/tiny-teacher"; do
  check "resolved config holds '$key'" grep -q "^ *$key\$" "$WORK/resolved.yaml"
done
check "every stage has its optimizer block" test "$(grep -c '^    beta2: 0.999$' "$WORK/resolved.yaml")" = 4
check "resolved config reloads" bash -c "'$S2D' train '$WORK/resolved.yaml' --dry-run --out '$WORK/d' >'$WORK/dry2.txt'"
check "resolving is idempotent" bash -c "sed -n '/^resolved config/,\$p' '$WORK/dry2.txt' | tail -n +2 | cmp -s - '$WORK/resolved.yaml'"
check "the plan of the resolved config is the same" bash -c \
  "diff <(grep '^  stage' '$WORK/dry.txt') <(grep '^  stage' '$WORK/dry2.txt')"
# a preset model's architecture, a file dataset's format and limit
"$S2D" train configs/demo/demo.yaml --dry-run --out "$WORK/d3" >"$WORK/demo.txt" 2>&1 || fail "demo dry run"
check "init preset architecture resolved" grep -q "^      num_key_value_heads: [0-9]" "$WORK/demo.txt"

# the study's toy world: the arithmetic task's optional keys (operators, a misconception) resolve and reload
"$S2D" train configs/study/base.yaml --dry-run --out "$WORK/st" --set datasets.sft.right_to_left=0.6 \
  --set datasets.sft.operators=+- >"$WORK/st.txt" 2>&1 || fail "study base dry run: $(tail -2 "$WORK/st.txt")"
check "dry run names the operators and the misconception" \
  grep -q "data  sft .*2 ops (+-), operands 0..9, some solutions with sums right to left" "$WORK/st.txt"
check "other datasets keep all three operators" grep -q "data  test .*2 ops (+-\*)" "$WORK/st.txt"
sed -n '/^resolved config/,$p' "$WORK/st.txt" | tail -n +2 >"$WORK/st.yaml"
check "resolved: right_to_left and left_to_right of every arithmetic set" \
  test "$(grep -c '^    right_to_left: ' "$WORK/st.yaml")" = 6 -a "$(grep -c '^    left_to_right: 0.0$' "$WORK/st.yaml")" = 6
check "the study base's resolved config reloads" bash -c "'$S2D' train '$WORK/st.yaml' --dry-run --out '$WORK/st' >/dev/null"
expect_error "both misconceptions at once are refused" "left_to_right and right_to_left are both set" \
  "$S2D" train configs/study/base.yaml --dry-run --out "$WORK/st2" --set datasets.sft.right_to_left=0.6 \
  --set datasets.sft.left_to_right=0.2
expect_error "an unknown operator is refused" "datasets.sft: arithmetic task: operators = '\+/', expected some of" \
  "$S2D" train configs/study/base.yaml --dry-run --out "$WORK/st3" --set datasets.sft.operators=+/

# a model name with '.' (not addressable by a key path) is left as written, and the config still reloads
sed 's/  teacher: {path/  teach.er: {path/; s/policy: teacher$/policy: teach.er/' $cfg >"$WORK/dot.yaml"
"$S2D" train "$WORK/dot.yaml" --dry-run --out "$WORK/dot" >"$WORK/dot.txt" 2>&1 || fail "dotted model name: $(tail -2 "$WORK/dot.txt")"
sed -n '/^resolved config/,$p' "$WORK/dot.txt" | tail -n +2 >"$WORK/dot2.yaml"
check "dotted model name: resolved config reloads" bash -c "'$S2D' train '$WORK/dot2.yaml' --dry-run --out '$WORK/dot' >/dev/null"

# --set defaults.* has no effect after the merge: rejected with the reason
expect_error "--set defaults.steps is rejected" "defaults: only holds YAML anchors.*pipeline\[0\]\.steps" \
  "$S2D" train $cfg --dry-run --out "$WORK/e1" --set defaults.steps=3

# every --set example in README.md runs as written (against the tiny pipeline)
n=0
while IFS= read -r ex; do
  case "$ex" in "--set key.path=value" | *'*'*) continue ;; esac # the syntax, and the rejected defaults.*
  n=$((n + 1))
  eval "args=($ex)"
  if "$S2D" train $cfg --dry-run --out "$WORK/readme" "${args[@]}" >"$WORK/ex.txt" 2>&1; then ok
  else fail "README example '$ex': $(tail -2 "$WORK/ex.txt")"; fi
done < <(grep -oE -- "--set ('[^']*'|[^ \`']+)" README.md | sort -u)
check "README has --set examples ($n)" test "$n" -ge 4
"$S2D" train $cfg --dry-run --out "$WORK/s" --set pipeline[1].optimizer.lr=1e-6 \
  --set 'pipeline[0].sampling={temperature: 0.7, top_p: 0.95, max_new_tokens: 16}' >"$WORK/set.txt" 2>&1
check "optimizer.lr override shows in the plan" grep -q "stage 2 bridge_fkl .*lr 1e-06" "$WORK/set.txt"
check "flow override resolved with its defaults" bash -c "grep -A4 '^  sampling:' '$WORK/set.txt' | grep -q 'top_p: 0.95'"

# verl / TRL names: "did you mean" the s2d key
expect_error "verl actor lr" "unknown key 'actor_rollout_ref'.*did you mean pipeline\[N\]\.optimizer\.lr\? .*verl" \
  "$S2D" train $cfg --dry-run --out "$WORK/v" --set actor_rollout_ref.actor.optim.lr=1e-6
expect_error "TRL learning_rate in a stage" "did you mean pipeline\[0\]\.optimizer\.lr\? 'learning_rate' is TRL" \
  "$S2D" train $cfg --dry-run --out "$WORK/v" --set pipeline[0].learning_rate=1e-6
expect_error "verl trainer.logger" "did you mean logging\.tensorboard .*'trainer.logger' is verl" \
  "$S2D" train $cfg --dry-run --out "$WORK/v" --set 'trainer={logger: tensorboard}'
expect_error "TRL report_to" "did you mean logging\.tensorboard .*'report_to' is TRL" \
  "$S2D" train $cfg --dry-run --out "$WORK/v" --set report_to=tensorboard
expect_error "kl_coef" "did you mean pipeline\[2\]\.grpo\.kl_beta" \
  "$S2D" train $cfg --dry-run --out "$WORK/v" --set pipeline[2].kl_coef=0.1
expect_error "num_generations" "did you mean pipeline\[1\]\.group_size" \
  "$S2D" train $cfg --dry-run --out "$WORK/v" --set pipeline[1].num_generations=4
expect_error "max_prompt_length" "s2d has no such key: s2d does not truncate prompts" \
  "$S2D" train $cfg --dry-run --out "$WORK/v" --set max_prompt_length=512
{ cat $cfg; printf 'actor_rollout_ref:\n  rollout:\n    n: 8\n'; } >"$WORK/verl.yaml"
expect_error "verl block in a file names file:line:col" "verl.yaml:$(($(wc -l <$cfg) + 1)):1: unknown key 'actor_rollout_ref' at actor_rollout_ref.rollout.n \(did you mean pipeline\[N\]\.group_size" \
  "$S2D" train "$WORK/verl.yaml" --dry-run --out "$WORK/v"
expect_error "other typos keep the plain did-you-mean" "unknown key 'stepz' .*did you mean 'steps'" \
  "$S2D" train $cfg --dry-run --out "$WORK/v" --set pipeline[0].stepz=3
check "docs/coming-from-verl.md exists" test -s docs/coming-from-verl.md

# threads: the dry run and the start-up log say how many and why (core/threads.h)
env -u OMP_NUM_THREADS -u OMP_WAIT_POLICY OMPI_COMM_WORLD_LOCAL_SIZE=64 "$S2D" train $cfg --dry-run --out "$WORK/t" \
  >"$WORK/t1.txt" 2>&1
check "cores / local ranks" grep -qE "^backend cpu, 1 thread per rank \([0-9]+ cores / 64 local ranks from OMPI_COMM_WORLD_LOCAL_SIZE\)" "$WORK/t1.txt"
check "oversubscribed is said" grep -q "oversubscribed" "$WORK/t1.txt"
OMP_NUM_THREADS=3 OMP_WAIT_POLICY=active "$S2D" train $cfg --dry-run --out "$WORK/t" >"$WORK/t2.txt" 2>&1
check "OMP_NUM_THREADS and OMP_WAIT_POLICY respected" grep -q "^backend cpu, 3 threads per rank (from OMP_NUM_THREADS.*OMP_WAIT_POLICY active" "$WORK/t2.txt"
env -u OMP_WAIT_POLICY OMP_NUM_THREADS=2 "$S2D" train $cfg --dry-run --out "$WORK/t" >"$WORK/t3.txt" 2>&1
check "several threads: s2d sets passive waiting (re-executed)" grep -q "^backend cpu, 2 threads per rank .*OMP_WAIT_POLICY passive (set by s2d)" "$WORK/t3.txt"
summary
