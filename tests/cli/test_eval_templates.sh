#!/usr/bin/env bash
# s2d eval defaults and templates: the tokenizer from the model directory and --samples 1 by default; the chat
# template read from tokenizer_config.json (the real Qwen3 and Llama 3.1 templates in tests/fixtures/tokenizers
# render exactly as --template qwen3 / llama3; any other template is refused; --template overrides); warnings
# for a template that does not fit the model's type and for K > 1 samples at temperature 0; avg@K_stderr and the
# by_subject / by_level breakdowns recomputed from the samples; --reward-command in eval; the renamed train key
# eval.samples -> eval.problems.
. "$(dirname "$0")/lib.sh"
cd "$WORK" || exit 1
TOKJ="$S2D_ROOT/tests/fixtures/data/tiny_tokenizer/tokenizer.json"
MATH="$S2D_ROOT/tests/fixtures/data/math500_sample.jsonl"
"$S2D" init-model --preset qwen3-tiny --out m --seed 3 2>/dev/null
check "init-model" test -f m/config.json

# 1. defaults: no --tokenizer (the model directory's), no --samples (1)
expect_error "no tokenizer anywhere: the error says so" "no --tokenizer, and the model's: .*m/tokenizer.json" \
  "$S2D" eval --model m --data "$MATH" --max-new-tokens 2
cp "$TOKJ" m/tokenizer.json
sum=$("$S2D" eval --model m --data "$MATH" --max-new-tokens 2 2>err1.txt)
check "tokenizer from the model directory, one sample by default ($(tail -1 err1.txt))" \
  grep -q '"template": "qwen3", "verify": "math", "problems": 5, "samples": 1, "avg@1"' <<<"$sum"
check "no warning at the defaults" bash -c "! grep -q warn err1.txt"

# 2. chat_template from tokenizer_config.json next to the tokenizer
mk_tok() { # dir, fixture name, [suffix appended to the template]
  mkdir -p "$1" && cp "$TOKJ" "$1/" && python3 - "$S2D_ROOT/tests/fixtures/tokenizers/$2/tokenizer_config.json" \
    "$1/tokenizer_config.json" "${3:-}" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))["chat_template"]
json.dump({"chat_template": t + sys.argv[3], "model_max_length": 1000}, open(sys.argv[2], "w"))
EOF
}
mk_tok tq qwen3; mk_tok tl llama3_1; mk_tok tx qwen3 " "
printf '{"problem": "What is 2+3?", "answer": "5"}\n{"problem": "Sam has 3 apples and buys 4. How many?", "answer": "7"}\n' >short.jsonl
ev() { "$S2D" eval --model m --data short.jsonl --max-new-tokens 6 --temperature 1 --seed 2 "$@"; }
ev --tokenizer tq --out q1.jsonl >q1.sum 2>q1.err
ev --tokenizer "$S2D_ROOT/tests/fixtures/data/tiny_tokenizer" --template qwen3 --out q2.jsonl >q2.sum 2>/dev/null
check "Qwen3 tokenizer_config.json: template qwen3" grep -q '"template": "qwen3"' q1.sum
check "Qwen3 chat_template: the log says where it came from" grep -q "chat template qwen3 (from the tokenizer's tokenizer_config.json)" q1.err
check "Qwen3 chat_template renders as --template qwen3 (same samples)" cmp -s q1.jsonl q2.jsonl
ev --tokenizer tl --out l1.jsonl >l1.sum 2>l1.err
ev --tokenizer tq --template llama3 --out l2.jsonl >/dev/null 2>l2.err
check "Llama 3.1 tokenizer_config.json: template llama3" grep -q '"template": "llama3"' l1.sum
check "Llama chat_template renders as --template llama3" cmp -s l1.jsonl l2.jsonl
check "llama3 template on a qwen3 model: warned" grep -q "warn.*chat template llama3 (from the tokenizer's tokenizer_config.json) does not fit the model's type qwen3" l1.err
check "llama3 by --template on a qwen3 model: warned" grep -q "warn.*chat template llama3 (from --template) does not fit the model's type qwen3" l2.err
check "the two templates give different samples" bash -c "! cmp -s q1.jsonl l1.jsonl"
expect_error "an unknown chat_template is refused" \
  "tx/tokenizer_config.json: its chat_template \(4117 bytes, FNV-1a 0x[0-9a-f]{16}\) is none of the built-in templates.*give --template" \
  ev --tokenizer tx
ev --tokenizer tx --template qwen3 --out x1.jsonl >/dev/null 2>&1
check "--template overrides an unknown chat_template" cmp -s x1.jsonl q1.jsonl
"$S2D" init-model --preset llama-tiny --out lm --seed 3 2>/dev/null
"$S2D" eval --model lm --tokenizer tq --data short.jsonl --max-new-tokens 2 >/dev/null 2>lm.err
check "qwen3 template on a llama model: warned" grep -q "warn.*chat template qwen3 .*does not fit the model's type llama" lm.err

# 3. several samples at temperature 0 are warned about; one sample at 0 or several at 0.6 are not
ev --tokenizer tq --samples 3 --temperature 0 >/dev/null 2>w1.err
check "K = 3 at temperature 0: warned" grep -q "warn.*--samples 3 at --temperature 0: greedy decoding gives 3 identical samples" w1.err
"$S2D" eval --model m --data short.jsonl --max-new-tokens 2 --samples 3 >/dev/null 2>w2.err
check "K = 3 at temperature 0.6: no warning" bash -c "! grep -q warn w2.err"

# 4. avg@K_stderr and the breakdowns, recomputed from the samples. The references are taken from a first run's
# extracted answers (gsm8k verifier: the last number), so some samples are right and some wrong.
run_math() { "$S2D" eval --model m --data "$1" --format math --verify gsm8k --samples 4 --max-new-tokens 24 --seed 5 \
  --temperature 1 --out "$2" 2>/dev/null; }
sum=$("$S2D" eval --model m --data "$MATH" --max-new-tokens 1 2>/dev/null)
check "MATH-500 records: by_subject and by_level" grep -q '"by_subject": {"Algebra": {"problems": 1, "avg@1": 0.000000, "avg@1_stderr": null}, "Geometry": .*"Intermediate Algebra": {"problems": 2, .*"by_level": {"2": {"problems": 2,' <<<"$sum"
python3 - <<'EOF' >d1.jsonl
import json
subjects = ["Algebra", "Geometry", "Number Theory"]
for i in range(9):
    print(json.dumps({"problem": "What is %d + %d?" % (i, 2 * i), "answer": "none", "subject": subjects[i % 3],
                      "level": 1 + i % 2 + (i == 8), "unique_id": "p%d" % i}))
EOF
run_math d1.jsonl s1.jsonl >/dev/null
python3 - d1.jsonl s1.jsonl <<'EOF' >d2.jsonl
import json, sys
got = {}
for l in open(sys.argv[2]):
    s = json.loads(l)
    if s["sample"] == 0: got[s["id"]] = s["extracted"]
for l in open(sys.argv[1]):
    r = json.loads(l)
    r["answer"] = got[r["unique_id"]] or "none"
    print(json.dumps(r))
EOF
sum=$(run_math d2.jsonl s2.jsonl)
check "stderr and breakdowns match the samples" python3 - d2.jsonl s2.jsonl "$sum" <<'EOF'
import json, math, sys
recs = {json.loads(l)["unique_id"]: json.loads(l) for l in open(sys.argv[1])}
c = {}
for l in open(sys.argv[2]):
    s = json.loads(l); c[s["id"]] = c.get(s["id"], 0) + s["correct"]
summ = json.loads(sys.argv[3])
def stats(ids):
    f = [c[i] / 4 for i in ids]
    m = sum(f) / len(f)
    se = math.sqrt(sum((x - m) ** 2 for x in f) / (len(f) - 1) / len(f)) if len(f) > 1 else None
    return len(f), m, se
n, m, se = stats(list(c))
assert 0 < m < 1, ("want some right and some wrong", m)
assert abs(summ["avg@4"] - m) < 1e-6 and abs(summ["avg@4_stderr"] - se) < 1e-6, (summ, m, se)
for key, field in (("by_subject", "subject"), ("by_level", "level")):
    groups = {}
    for i, r in recs.items(): groups.setdefault(str(r[field]), []).append(i)
    assert sorted(summ[key]) == sorted(groups), (summ[key], groups)
    assert list(summ[key]) == sorted(summ[key]), "keys sorted"
    for g, ids in groups.items():
        n, m, se = stats(ids)
        b = summ[key][g]
        assert b["problems"] == n and abs(b["avg@4"] - m) < 1e-6, (g, b, n, m)
        assert (b["avg@4_stderr"] is None) == (se is None) and (se is None or abs(b["avg@4_stderr"] - se) < 1e-6), (g, b, se)
EOF
sum=$("$S2D" eval --model m --data "$S2D_ROOT/data/gsm8k/test.jsonl" --limit 2 --max-new-tokens 2 2>/dev/null)
check "no subject/level fields: no breakdowns" bash -c "! grep -q by_subject <<<'$sum'"

# 5. --reward-command: every sample scored, reward on the --out lines, extras averaged
cat >r.py <<'EOF'
import json, sys
for l in sys.stdin:
    r = json.loads(l)
    print(json.dumps({"reward": len(r["response"]) / 10, "n": len(r["response"])}), flush=True)
EOF
sum=$(ev --tokenizer tq --samples 1 --reward-command "python3 $WORK/r.py" --out rw.jsonl 2>/dev/null)
check "reward_mean and reward/n are the means over the samples" python3 - rw.jsonl "$sum" <<'EOF'
import json, sys
s = [json.loads(l) for l in open(sys.argv[1])]
summ = json.loads(sys.argv[2])
n = [len(x["completion"]) for x in s]
assert all(abs(x["reward"] - len(x["completion"]) / 10) < 1e-5 for x in s), s
assert abs(summ["reward_mean"] - sum(n) / 10 / len(n)) < 1e-5 and abs(summ["reward/n"] - sum(n) / len(n)) < 1e-4, summ
EOF
expect_error "a failing reward command names the sample" \
  "reward command \"python3 -c 'import sys; sys.exit\(4\)'\", short.jsonl:1 sample 0 \(id 1\): .*exited with status 4" \
  ev --tokenizer tq --reward-command "python3 -c 'import sys; sys.exit(4)'"

# 6. train: eval.samples was renamed eval.problems
sed 's/problems: 64/samples: 64/' "$S2D_ROOT/configs/tests/tiny-pipeline.yaml" | \
  sed "s#tests/fixtures#$S2D_ROOT/tests/fixtures#" >old.yaml
expect_error "eval.samples: renamed, with a clear error" "old.yaml:[0-9]+:[0-9]+: pipeline\[0\]\.eval\.samples was renamed to eval\.problems" \
  "$S2D" train old.yaml --dry-run --out d
"$S2D" train "$S2D_ROOT/configs/tests/tiny-pipeline.yaml" --dry-run --out d >dry.txt 2>&1
check "eval.problems in the resolved config" grep -q "^ *problems: 64$" dry.txt
summary
