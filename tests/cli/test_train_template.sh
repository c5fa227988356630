#!/usr/bin/env bash
# The chat template of a training run, chosen as s2d eval chooses it (text/chat.h chat_template_choose):
# prompt.template when given (and not auto), else the built-in template that the stage policies' tokenizer
# tokenizer_config.json chat_template is (Qwen3 -> qwen3, Llama 3.1 -> llama3; any other is refused until
# prompt.template picks one), else qwen3; a template that does not fit the policy's model type is warned about.
# Configs without a tokenizer_config.json keep their prompts: a run without prompt.template samples the very
# tokens of one with template: qwen3, and so does one whose tokenizer's chat_template is Qwen3's (template none
# does not: the check can fail).
. "$(dirname "$0")/lib.sh"
PY=python3
python3 -c 'import h5py' 2>/dev/null || PY=/usr/bin/python3
cd "$WORK" || exit 1
MODEL="$S2D_ROOT/tests/fixtures/models/tiny-teacher"
mk_tok() { # dir, [fixture name], [suffix appended to its template]: the model's tokenizer, with a chat_template
  mkdir -p "$1" && cp "$MODEL/tokenizer.json" "$1/"
  [ -n "${2:-}" ] || return 0
  python3 - "$S2D_ROOT/tests/fixtures/tokenizers/$2/tokenizer_config.json" "$1/tokenizer_config.json" "${3:-}" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))["chat_template"]
json.dump({"chat_template": t + sys.argv[3]}, open(sys.argv[2], "w"))
EOF
}
mk_tok plain; mk_tok tq qwen3; mk_tok tl llama3_1; mk_tok tx qwen3 " "
config() { # tokenizer dir, prompt line, [steps]
  cat <<EOF
seed: 3
$2
models:
  pol: {path: $MODEL, tokenizer: $WORK/$1}
datasets:
  train: {task: arith, split: train, size: 32, seed: 1, ops: 2, max_operand: 5}
pipeline:
  - {name: rl, algo: grpo, policy: pol, data: train, steps: ${3:-1}, prompts_per_step: 2, group_size: 2,
     sampling: {temperature: 1.0, max_new_tokens: 4}, eval: {data: train, problems: 3, max_new_tokens: 2}}
  - {name: rl2, algo: grpo, policy: rl, data: train, steps: 1, prompts_per_step: 2, group_size: 2,
     sampling: {temperature: 1.0, max_new_tokens: 4}}
logging: {tensorboard: false, metrics_h5: false}
EOF
}
dry() { # name, tokenizer dir, prompt line: the resolved config and the log
  config "$2" "$3" >"$1.yaml"
  "$S2D" train "$1.yaml" --dry-run --out "$WORK/o_$1" >"$1.out" 2>"$1.err"
}
resolved() { grep -A2 '^prompt:' "$1.out" | grep -q "^  template: $2\$"; }

# 1. no prompt.template, no tokenizer_config.json: qwen3 as before, no warning
dry d1 plain ""
check "no template anywhere: qwen3 ($(tail -1 d1.err))" resolved d1 qwen3
check "no template anywhere: the plan says qwen3" grep -q "stages, seed 3, template qwen3$" d1.out
check "no template anywhere: no warning" bash -c "! grep -q warn d1.err"
# 2. from the policy's tokenizer_config.json; auto is the same as absent
dry d2 tq ""
check "Qwen3 chat_template: qwen3" resolved d2 qwen3
check "Qwen3 chat_template on a qwen3 model: no warning" bash -c "! grep -q warn d2.err"
dry d3 tl ""
check "Llama 3.1 chat_template: llama3" resolved d3 llama3
check "llama3 from the tokenizer on a qwen3 model: warned once" test "$(grep -c "warn.*train: the chat template llama3 (from the tokenizer's tokenizer_config.json) does not fit the model's type qwen3" d3.err)" = 1
dry d4 tl "prompt: {template: auto}"
check "template: auto reads the tokenizer" resolved d4 llama3
# 3. an explicit template wins, and is warned about when it does not fit
dry d5 tl "prompt: {template: qwen3-nothink}"
check "prompt.template overrides the tokenizer's" resolved d5 qwen3-nothink
check "qwen3-nothink on a qwen3 model: no warning" bash -c "! grep -q warn d5.err"
dry d6 plain "prompt: {template: llama3}"
check "llama3 by prompt.template on a qwen3 model: warned" grep -q "warn.*train: the chat template llama3 (from prompt.template) does not fit the model's type qwen3" d6.err
# 4. a chat_template that is none of the built-in ones is refused, naming the file and the key to set
config tx "" >x.yaml
expect_error "an unknown chat_template is refused" \
  "x.yaml: prompt.template: .*tx/tokenizer_config.json: its chat_template \(4117 bytes, FNV-1a 0x[0-9a-f]{16}\) is none of the built-in templates.*give prompt.template NAME" \
  "$S2D" train x.yaml --dry-run --out "$WORK/ox"
dry d7 tx "prompt: {template: qwen3}"
check "prompt.template overrides an unknown chat_template" resolved d7 qwen3
expect_error "a bad template name names the key" "prompt.template: unknown chat template 'qwen4'" \
  "$S2D" train "$(config plain "prompt: {template: qwen4}" >b.yaml; echo b.yaml)" --dry-run --out "$WORK/ob"

# 5. the prompts themselves: no template = template qwen3 = the Qwen3 chat_template, token for token
run() { # name, tokenizer dir, prompt line
  config "$2" "$3" >"$1.yaml"
  "$S2D" train "$1.yaml" --out "$WORK/$1" >/dev/null 2>"$1.err" && echo done >"$1.ok"
}
run r1 plain 'prompt: {instruction: ""}'; run r2 plain 'prompt: {template: qwen3, instruction: ""}'
run r3 tq 'prompt: {instruction: ""}'; run r4 plain 'prompt: {template: none, instruction: ""}'
check "runs finish ($(tail -1 r1.err))" test -f r1.ok -a -f r2.ok -a -f r3.ok -a -f r4.ok
check "no template = template: qwen3 = the Qwen3 chat_template, token for token; none differs" "$PY" - <<'EOF'
import h5py, numpy as np
def tok(d):
    with h5py.File(f"{d}/rollouts.h5", "r") as f:
        return f["tokens"][()], f["seqs/prompt_len"][()]
(a, pa), (b, pb), (c, pc), (d, pd) = tok("r1"), tok("r2"), tok("r3"), tok("r4")
assert len(a) > 0 and len(pa) == 8, (len(a), len(pa))  # 2 stages x 2 prompts x 2 samples
assert np.array_equal(a, b) and np.array_equal(pa, pb), "no template vs template: qwen3 differ"
assert np.array_equal(a, c) and np.array_equal(pa, pc), "no template vs the Qwen3 chat_template differ"
assert len(pd) == 8 and (pd < pa).all(), ("template none: shorter prompts", pa, pd)
EOF
# 6. eval lines name their problem count "problems" (before and after the stage)
check "eval lines: \"problems\": 3, no \"samples\"" python3 - r1/metrics.jsonl <<'EOF'
import json, sys
ev = [r for r in map(json.loads, open(sys.argv[1])) if r.get("event") == "eval"]
assert len(ev) == 2 and all(r["problems"] == 3 and "samples" not in r for r in ev), ev
EOF
summary
