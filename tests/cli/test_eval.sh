#!/usr/bin/env bash
# s2d eval: summary metrics recomputed from the per-sample JSONL (avg@K, pass@1 = mean c/K, pass@K = share of
# problems with c > 0), a run where the answers are known to be hit, greedy (maj = avg), determinism,
# samples independent of --limit, and bad-input errors (no partial --out).
. "$(dirname "$0")/lib.sh"
TOK="$S2D_ROOT/tests/fixtures/data/tiny_tokenizer"
"$S2D" init-model --preset qwen3-tiny --out "$WORK/m" --seed 3 2>/dev/null
check "init-model" test -f "$WORK/m/config.json"

cat >"$WORK/q.jsonl" <<'JSON'
{"q": "What is 1+1?", "a": "x", "k": "p1"}
{"q": "Sam has 3 apples and buys 4 more. How many?", "a": "x", "k": "p2"}
{"q": "A train goes 60 miles in 2 hours. How fast is it?", "a": "x", "k": "p3"}
{"q": "What is 10 - 7?", "a": "x", "k": "p4"}
JSON
run_eval() { # data out [extra flags]
  local data=$1 out=$2; shift 2
  "$S2D" eval --model "$WORK/m" --tokenizer "$TOK" --data "$data" --format generic --prompt-field q \
    --answer-field a --id-field k --verify gsm8k --samples 6 --max-new-tokens 24 --seed 11 --out "$out" "$@" \
    2>"$WORK/err"
}
# recompute avg@K, pass@K from the JSONL; print "avg passk" with 6 decimals
recompute() {
  awk -v K=6 '{ match($0, /"id": "[^"]*"/); id = substr($0, RSTART, RLENGTH); n[id]++
               if ($0 ~ /"correct": true/) c[id]++ }
       END { for (i in n) { P++; avg += c[i] / K; if (c[i] > 0) pk++ } printf "%.6f %.6f\n", avg / P, pk / P }' "$1"
}
metric() { sed -E "s/.*\"$1\": ([0-9.]+).*/\1/" <<<"$2"; }

# run 1: placeholder answers; take each problem's sample-0 answer as the reference for run 2
sum1=$(run_eval "$WORK/q.jsonl" "$WORK/s1.jsonl")
check "run 1 succeeds" test -n "$sum1"
check "24 samples written" test "$(wc -l <"$WORK/s1.jsonl")" -eq 24
check "fields present" grep -q '"dataset": .*"id": "p1", "sample": 0, "correct": false, "extracted": .*"finish": .*"n_tokens": .*"completion": ' "$WORK/s1.jsonl"
: >"$WORK/q2.jsonl"
hits=0
for k in p1 p2 p3 p4; do
  ans=$(grep "\"id\": \"$k\", \"sample\": 0," "$WORK/s1.jsonl" | sed -nE 's/.*"extracted": "([0-9.-]+)".*/\1/p')
  q=$(grep "\"k\": \"$k\"" "$WORK/q.jsonl" | sed -E 's/.*"q": "([^"]*)".*/\1/')
  [ -n "$ans" ] && hits=$((hits + 1))
  echo "{\"q\": \"$q\", \"a\": \"${ans:-none}\", \"k\": \"$k\"}" >>"$WORK/q2.jsonl"
done
check "the random model produced at least one number in sample 0 ($hits)" test "$hits" -ge 1
sum2=$(run_eval "$WORK/q2.jsonl" "$WORK/s2.jsonl")
check "run 2 succeeds" test -n "$sum2"
hit0=$(grep -c '"sample": 0, "correct": true' "$WORK/s2.jsonl")
check "every sample 0 with a number is now correct ($hit0 of $hits)" test "$hit0" -eq "$hits"
read -r avg pk <<<"$(recompute "$WORK/s2.jsonl")"
check "avg@6 matches the samples ($(metric 'avg@6' "$sum2") vs $avg)" test "$(metric 'avg@6' "$sum2")" = "$avg"
check "pass@1 = avg@6" test "$(metric 'pass@1' "$sum2")" = "$avg"
check "pass@6 matches the samples ($(metric 'pass@6' "$sum2") vs $pk)" test "$(metric 'pass@6' "$sum2")" = "$pk"
check "pass@6 > 0" test "$pk" != "0.000000"

# determinism, and a problem's samples do not depend on the other problems (--limit)
run_eval "$WORK/q2.jsonl" "$WORK/s3.jsonl" >/dev/null
check "same seed, same samples" cmp -s "$WORK/s2.jsonl" "$WORK/s3.jsonl"
run_eval "$WORK/q2.jsonl" "$WORK/s4.jsonl" --limit 1 --batch 2 >/dev/null
check "--limit 1 keeps problem 1's samples" cmp -s "$WORK/s4.jsonl" <(head -6 "$WORK/s2.jsonl")
run_eval "$WORK/q2.jsonl" "$WORK/s5.jsonl" --seed 12 >/dev/null
check "another seed, other samples" bash -c "! cmp -s '$WORK/s2.jsonl' '$WORK/s5.jsonl'"

# greedy: the K samples of a problem are identical, so maj@K = avg@K = pass@K
sumg=$(run_eval "$WORK/q2.jsonl" "$WORK/sg.jsonl" --temperature 0)
distinct=$(sed -E 's/"sample": [0-9]+, //' "$WORK/sg.jsonl" | sort -u | wc -l)
check "greedy: one distinct sample per problem ($distinct)" test "$distinct" -eq 4
check "greedy: maj@6 = avg@6 = pass@6" test "$(metric 'maj@6' "$sumg")" = "$(metric 'avg@6' "$sumg")" -a \
  "$(metric 'pass@6' "$sumg")" = "$(metric 'avg@6' "$sumg")"

# shipped data and formats: gsm8k (auto) and a MATH fixture with the chat templates
out=$("$S2D" eval --model "$WORK/m" --tokenizer "$TOK" --data "$S2D_ROOT/data/gsm8k/test.jsonl" \
  --data "$S2D_ROOT/tests/fixtures/data/math500_sample.jsonl" --limit 2 --samples 2 --max-new-tokens 4 \
  --template qwen3-nothink 2>/dev/null)
check "two datasets, two summary lines" test "$(wc -l <<<"$out")" -eq 2
check "gsm8k detected, gsm8k verifier" grep -q '"format": "gsm8k", "template": "qwen3-nothink", "verify": "gsm8k", "problems": 2, "samples": 2' <<<"$out"
check "math detected, math verifier" grep -q '"format": "math", "template": "qwen3-nothink", "verify": "math"' <<<"$out"

# bad input: clear errors, nothing written
expect_error "bad format" "unknown dataset format 'csv'" "$S2D" eval --model "$WORK/m" --tokenizer "$TOK" --data "$WORK/q.jsonl" --format csv --samples 1
expect_error "bad template" "unknown chat template 'chatml'" "$S2D" eval --model "$WORK/m" --tokenizer "$TOK" --data "$S2D_ROOT/data/gsm8k/test.jsonl" --template chatml --samples 1
printf '{"question": "ok?", "answer": "#### 1"}\n{"question": \n' >"$WORK/bad.jsonl"
expect_error "invalid JSON names file:line" "bad.jsonl:2: invalid JSON" "$S2D" eval --model "$WORK/m" --tokenizer "$TOK" --data "$WORK/bad.jsonl" --samples 1 --out "$WORK/none.jsonl"
check "no partial --out" test ! -e "$WORK/none.jsonl"
expect_error "tokenizer/model mismatch" "outside the model's vocabulary" "$S2D" eval --model "$WORK/m" --tokenizer "$S2D_ROOT/tests/fixtures/tokenizers/qwen3" --data "$WORK/q.jsonl" --format generic --prompt-field q --answer-field a --samples 1
summary
