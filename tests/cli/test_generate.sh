#!/usr/bin/env bash
# s2d generate: greedy output equals HF model.generate on the parity fixtures, outputs do not depend on the
# other prompts, stop tokens, flags, and bad input errors naming stdin:LINE with nothing on stdout.
. "$(dirname "$0")/lib.sh"
FIX=$S2D_ROOT/tests/fixtures/parity
export S2D_LOG=warn

for c in qwen3_tied llama_scaled qwen3_untied qwen2_tied; do
  for b in 1 2; do
    "$S2D" generate --model "$FIX/$c" --max-new-tokens 12 --temperature 0 --batch $b \
      <"$FIX/$c/greedy_prompts.jsonl" >"$WORK/$c.$b.out"
    check "$c greedy (batch $b) equals HF generate" cmp -s "$WORK/$c.$b.out" "$FIX/$c/greedy_out.jsonl"
  done
done

# The portable code paths (CPUs without AVX-512) give HF's greedy output too.
for c in qwen3_tied llama_scaled qwen3_untied qwen2_tied; do
  S2D_NO_AVX512=1 S2D_LOG=info "$S2D" generate --model "$FIX/$c" --max-new-tokens 12 --temperature 0 --batch 2 \
    <"$FIX/$c/greedy_prompts.jsonl" >"$WORK/$c.portable.out" 2>"$WORK/$c.portable.err"
  check "$c greedy with S2D_NO_AVX512=1 equals HF generate" cmp -s "$WORK/$c.portable.out" "$FIX/$c/greedy_out.jsonl"
  check "$c: S2D_NO_AVX512=1 selects the portable paths" grep -q "S2D_NO_AVX512=1: portable code paths" "$WORK/$c.portable.err"
done

M=$FIX/llama_scaled
gen() { "$S2D" generate --model "$M" --max-new-tokens 9 "$@"; }
# Sampling: prompt A's completion is the same alone, first, or third among others, with any batch size.
A='[5,17,300,2]'
printf '%s\n' "$A" >"$WORK/alone.in"
printf '%s\n' '[9]' '[40,41,42,43,44,45]' "$A" '[7,7]' '[100,200]' >"$WORK/mixed.in"
gen --temperature 1 --seed 3 --batch 1 <"$WORK/alone.in" >"$WORK/alone.out"
gen --temperature 1 --seed 3 --batch 2 <"$WORK/mixed.in" >"$WORK/mixed2.out"
gen --temperature 1 --seed 3 --batch 5 <"$WORK/mixed.in" >"$WORK/mixed5.out"
check "one output line per prompt" test "$(wc -l <"$WORK/mixed2.out")" -eq 5
check "prompt alone == prompt among others (batch 2)" test "$(cat "$WORK/alone.out")" = "$(sed -n 3p "$WORK/mixed2.out")"
check "batch 2 == batch 5" cmp -s "$WORK/mixed2.out" "$WORK/mixed5.out"
gen --temperature 1 --seed 4 --batch 2 <"$WORK/mixed.in" >"$WORK/seed4.out"
check "another seed gives other samples" bash -c "! cmp -s '$WORK/mixed2.out' '$WORK/seed4.out'"
printf '%s\n' "$A" "$A" "$A" | gen --temperature 1 --seed 3 >"$WORK/dup.out"
check "duplicated prompts get independent samples" test "$(sort -u "$WORK/dup.out" | wc -l)" -ge 2
check "first of the duplicates equals the prompt alone" test "$(head -1 "$WORK/dup.out")" = "$(cat "$WORK/alone.out")"
gen --temperature 0.8 --top-k 5 --top-p 0.9 --seed 1 <"$WORK/mixed.in" >"$WORK/filtered.out"
check "top-k/top-p run" test "$(wc -l <"$WORK/filtered.out")" -eq 5

# Stop tokens: stopping on the 4th greedy token of the first fixture prompt truncates it there.
first_out=$(head -1 "$M/greedy_out.jsonl")
stop=$(echo "$first_out" | tr -d '[]' | cut -d, -f4)
head -1 "$M/greedy_prompts.jsonl" | "$S2D" generate --model "$M" --max-new-tokens 12 --temperature 0 --stop "$stop" \
  >"$WORK/stop.out"
want=$(echo "$first_out" | tr -d '[]' | awk -F, -v s="$stop" '{o=$1; for(i=2;i<=NF;i++){o=o","$i; if($i==s)break}; if($1==s)o=$1; print "["o"]"}')
check "--stop $stop truncates after the stop token" test "$(cat "$WORK/stop.out")" = "$want"
head -1 "$M/greedy_prompts.jsonl" | "$S2D" generate --model "$M" --max-new-tokens 12 --temperature 0 --details \
  >"$WORK/details.out"
check "--details prints ids, logprobs and finish" grep -q '"ids": \[.*\], "logprobs": \[.*\], "finish": "length"' "$WORK/details.out"
check "empty input gives empty output" test -z "$(printf '' | gen --temperature 0)"

# Bad input: errors name stdin:LINE and nothing reaches stdout.
expect_error "invalid JSON names its line" 'stdin:2' gen --temperature 0 < <(printf '[1,2]\n[3,\n')
expect_error "non-integer id" 'stdin:3.*not an integer' gen --temperature 0 < <(printf '[1]\n[2]\n[1.5]\n')
expect_error "id outside the vocabulary" 'stdin:2.*outside the vocabulary' gen --temperature 0 < <(printf '[1]\n[512]\n')
expect_error "negative id" 'stdin:1.*outside the vocabulary' gen --temperature 0 < <(printf '[-1]\n')
expect_error "empty prompt" 'stdin:2: empty prompt' gen --temperature 0 < <(printf '[1]\n[]\n')
expect_error "not an array" 'stdin:1' gen --temperature 0 < <(printf '{"ids": [1]}\n')
expect_error "prompt longer than --max-len" 'stdin:1.*maximum length' gen --temperature 0 --max-len 4 < <(printf '[1,2,3,4,5]\n')
expect_error "missing --model" 'model' "$S2D" generate --max-new-tokens 3
expect_error "missing --max-new-tokens" 'max-new-tokens' "$S2D" generate --model "$M"
expect_error "bad --top-p" 'top-p' gen --top-p 1.5
expect_error "bad --temperature" 'temperature' gen --temperature -1
expect_error "bad --stop" 'stop' gen --stop 1,x
expect_error "stop outside the vocabulary" 'stop.*vocabulary' gen --stop 9999 < <(printf '[1]\n')
expect_error "unknown flag" "generate: unknown option '--bogus'" gen --bogus
# getopt_long: --name=value is --name value; a flag takes no value; a value-taking option at the end needs one
a=$(printf '[5,17]\n' | gen --temperature 0 2>/dev/null); b=$(printf '[5,17]\n' | gen --temperature=0 2>/dev/null)
check "--temperature=0 is --temperature 0" test -n "$a" -a "$a" = "$b"
expect_error "a flag with a value" "generate: --details takes no value" gen --details=1
expect_error "an option without its value" "generate: --seed needs a value" gen --seed
expect_error "a stray argument" "generate: unexpected argument 'extra'" gen extra
expect_error "missing model dir" 'nonexistent' "$S2D" generate --model "$WORK/nonexistent" --max-new-tokens 2
out=$(printf '[1]\n[2]\n[99999]\n' | gen --temperature 0 2>/dev/null)
check "no partial output on error" test -z "$out"
summary
