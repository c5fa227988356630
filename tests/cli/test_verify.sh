#!/usr/bin/env bash
# s2d verify: JSON lines in, {"correct","extracted"} lines out; errors name stdin:LINE and the field.
. "$(dirname "$0")/lib.sh"

# math mode (default): known MATH false negatives are accepted, look-alikes rejected, no box → null
cat >"$WORK/math.jsonl" <<'JSON'
{"response": "so the answer is $\\boxed{0.50}$.", "answer": "\\frac12"}
{"response": "\\boxed{\\text{(C)}}", "answer": "C"}
{"response": "\\boxed{\\pm 2021}", "answer": "2021"}

{"response": "The answer is 5.", "answer": "5"}
{"response": "first \\boxed{3}, finally \\boxed{1,000}", "answer": "1000"}
JSON
out=$("$S2D" verify <"$WORK/math.jsonl")
expected='{"correct":true,"extracted":"0.50"}
{"correct":true,"extracted":"\\text{(C)}"}
{"correct":false,"extracted":"\\pm 2021"}
{"correct":false,"extracted":null}
{"correct":true,"extracted":"1,000"}'
check "math mode output (blank lines skipped)" test "$out" = "$expected"
out2=$("$S2D" verify --mode math <"$WORK/math.jsonl")
check "--mode math is the default" test "$out2" = "$expected"

# gsm8k mode: #### number, else last number; commas and $ stripped
cat >"$WORK/gsm.jsonl" <<'JSON'
{"response": "She makes 9 * 2 = $18 every day.", "answer": "Janet sells 9 eggs.\n#### 18"}
{"response": "Profit: $70,000\n#### 70,000", "answer": "#### 70000"}
{"response": "She makes 20 dollars.", "answer": "#### 18"}
{"response": "I do not know.", "answer": "18"}
JSON
out=$("$S2D" verify --mode gsm8k <"$WORK/gsm.jsonl")
expected='{"correct":true,"extracted":"18"}
{"correct":true,"extracted":"70000"}
{"correct":false,"extracted":"20"}
{"correct":false,"extracted":null}'
check "gsm8k mode output" test "$out" = "$expected"

# every output line is valid JSON with the two keys (unicode and escapes survive)
printf '%s\n' '{"response": "caf\u00e9 \\boxed{\"x\"\\n}", "answer": "x"}' | "$S2D" verify >"$WORK/u.out"
check "output is valid JSON" python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read()); assert set(d)=={"correct","extracted"}' "$WORK/u.out"

# errors: name stdin:LINE and the field; exit non-zero; nothing on stdout
printf '%s\n' '{"response": "\\boxed{1}", "answer": "1"}' '{"response": "x", ' >"$WORK/bad.jsonl"
expect_error "invalid JSON names the line" 'stdin:2: invalid JSON' "$S2D" verify <"$WORK/bad.jsonl"
check "no partial output on error" test -z "$("$S2D" verify <"$WORK/bad.jsonl" 2>/dev/null)"
printf '%s\n' '{"response": "\\boxed{1}", "answer": "1"}' '{"answer": "1"}' >"$WORK/miss.jsonl"
expect_error "missing response" 'stdin:2: missing field "response"' "$S2D" verify <"$WORK/miss.jsonl"
printf '%s\n' '{"response": "\\boxed{1}"}' >"$WORK/miss2.jsonl"
expect_error "missing answer" 'stdin:1: missing field "answer"' "$S2D" verify <"$WORK/miss2.jsonl"
printf '%s\n' '{"response": "\\boxed{1}", "answer": 1}' >"$WORK/num.jsonl"
expect_error "answer must be a string" 'stdin:1: field "answer" must be a string' "$S2D" verify <"$WORK/num.jsonl"
printf '%s\n' '["\\boxed{1}", "1"]' >"$WORK/arr.jsonl"
expect_error "record must be an object" 'stdin:1: expected a JSON object' "$S2D" verify <"$WORK/arr.jsonl"
expect_error "unknown mode" "--mode: 'aime' is not math or gsm8k" "$S2D" verify --mode aime </dev/null
expect_error "unknown option" "unknown option '--fast'" "$S2D" verify --fast </dev/null
check "empty input gives empty output" test -z "$("$S2D" verify </dev/null)"

summary
