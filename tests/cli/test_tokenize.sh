#!/usr/bin/env bash
# s2d tokenize: encode every reference text of both tokenizers and compare with the reference ids; decode them
# back (Llama 3.1 has no normalizer, so the decoded JSON strings equal the reference texts); bad input errors.
source "$(dirname "$0")/lib.sh"
root=${S2D_ROOT:-.}
fix=$root/tests/fixtures

# The fixture lines are {"text":...,"ids":[...],"roundtrip":...} in this key order (JSON.stringify).
extract() { # file field(text|ids)
  if [ "$2" = text ]; then sed -E 's/^\{"text":(".*"),"ids":\[[^]]*\],"roundtrip":(true|false)\}$/\1/' "$1"
  else sed -E 's/^\{"text":".*","ids":(\[[^]]*\]),"roundtrip":(true|false)\}$/\1/' "$1"; fi
}

for t in qwen3 llama3_1; do
  extract "$fix/tokenizer/$t-encodings.jsonl" text >"$WORK/$t.texts"
  extract "$fix/tokenizer/$t-encodings.jsonl" ids >"$WORK/$t.want"
  check "$t: 263 texts extracted" [ "$(grep -c '' "$WORK/$t.texts")" = 263 ]
  if "$S2D" tokenize --tokenizer "$fix/tokenizers/$t" <"$WORK/$t.texts" >"$WORK/$t.got"; then
    check "$t: ids equal the reference on every line" cmp -s "$WORK/$t.want" "$WORK/$t.got"
  else
    fail "$t: tokenize exited non-zero"
  fi
  "$S2D" tokenize --tokenizer "$fix/tokenizers/$t/tokenizer.json" --decode <"$WORK/$t.want" >"$WORK/$t.decoded"
  check "$t: decode exits 0 with one line per input" [ "$(grep -c '' "$WORK/$t.decoded")" = 263 ]
done
# Same JSON string escaping as the fixture writer, and no normalizer: decode(ids) == text, byte for byte.
check "llama3_1: decoded strings equal the reference texts" cmp -s "$WORK/llama3_1.texts" "$WORK/llama3_1.decoded"

# Added-token strings map to their ids; nothing is added around the text.
got=$(printf '%s\n' '"<|im_start|>user\nHi<|im_end|>"' | "$S2D" tokenize --tokenizer "$fix/tokenizers/qwen3")
check "qwen3 chat markers map to their ids" [ "$got" = "[151644,872,198,13048,151645]" ]
got=$(printf '%s\n' '[151644,872,198,13048,151645]' | "$S2D" tokenize --tokenizer "$fix/tokenizers/qwen3" --decode)
check "qwen3 decode of chat markers" [ "$got" = '"<|im_start|>user\nHi<|im_end|>"' ]
got=$(printf '%s\n' '[158,224]' | "$S2D" tokenize --tokenizer "$fix/tokenizers/qwen3" --decode)
check "invalid UTF-8 (bytes E2 82, ids from HF) decodes to U+FFFD" [ "$got" = $'"\xef\xbf\xbd"' ]
got=$(printf '""\n\n"a"\n' | "$S2D" tokenize --tokenizer "$fix/tokenizers/qwen3")
check "empty text gives [] and blank lines are skipped" [ "$got" = $'[]\n[64]' ]

q="$fix/tokenizers/qwen3"
expect_error "invalid JSON names stdin:LINE" 'stdin:2: invalid JSON' \
  bash -c "printf '\"ok\"\n\"broken\n' | '$S2D' tokenize --tokenizer '$q'"
expect_error "a non-string line is an error" 'stdin:1: expected a JSON string' \
  bash -c "printf '[1,2]\n' | '$S2D' tokenize --tokenizer '$q'"
expect_error "U+0000 in text is refused" 'stdin:1: .*U\+0000' \
  bash -c "printf '\"a\\\\u0000b\"\n' | '$S2D' tokenize --tokenizer '$q'"
expect_error "decode: id out of range" 'stdin:2: .*id 151669 at position 1' \
  bash -c "printf '[1]\n[5,151669]\n' | '$S2D' tokenize --tokenizer '$q' --decode"
expect_error "decode: negative id" 'stdin:1: .*id -1' \
  bash -c "printf '[-1]\n' | '$S2D' tokenize --tokenizer '$q' --decode"
expect_error "decode: not an array" 'stdin:1: expected a JSON array' \
  bash -c "printf '\"x\"\n' | '$S2D' tokenize --tokenizer '$q' --decode"
expect_error "decode: a non-integer id" 'stdin:1: element 1 is not an integer' \
  bash -c "printf '[1,2.5]\n' | '$S2D' tokenize --tokenizer '$q' --decode"
expect_error "--tokenizer is required" 'tokenizer DIR is required' "$S2D" tokenize
expect_error "unknown flag" "unknown option '--bogus'" "$S2D" tokenize --tokenizer "$q" --bogus
expect_error "missing tokenizer dir" 'nope.*cannot open' "$S2D" tokenize --tokenizer "$WORK/nope"
mkdir -p "$WORK/wp"
sed 's/"type": *"BPE"/"type":"WordPiece"/' "$q/tokenizer.json" >"$WORK/wp/tokenizer.json"
expect_error "unsupported model names tokenizer.json and model.type" 'tokenizer.json: model.type: model "WordPiece" is not supported' \
  "$S2D" tokenize --tokenizer "$WORK/wp"
# No partial output: a bad line after good ones still fails the command (callers must check the status).
printf '"a"\n{\n' | "$S2D" tokenize --tokenizer "$q" >/dev/null 2>&1
check "exit status is non-zero after a bad line" [ $? -ne 0 ]
# Differential check against Hugging Face tokenizers itself, when its Python package is importable (it is not
# a dependency of s2d; skipped otherwise): seeded random strings over tricky characters, and random id lists
# (decoding arbitrary ids exercises the U+FFFD rules).
if python3 -c 'import tokenizers' 2>/dev/null; then
  for t in qwen3 llama3_1; do
    out=$(python3 - "$S2D" "$fix/tokenizers/$t" <<'EOF'
import json, random, subprocess, sys
from tokenizers import Tokenizer
s2d, d = sys.argv[1], sys.argv[2]
rng = random.Random(12345)
alpha = list("abcxyzABCXYZ0123456789 '\"\t\n\r.,;:!?()[]{}<>|\\/-_+=*&^%$#@~`") + [
    "é", "ſ", "K", "\u00a0", "\u0085", "\u3000", "\u2028", "数", "学", "١", "\u0301", "🙂", "Ω", "∑", "²", "\u200b", "ß",
    "İ", "ǅ", "\u000b", "\u000c", "\x1c", "\x7f", "<|im_start|>", "<|im_end|>", "<think>", "<|eot_id|>",
    "<|begin_of_text|>", "'s", "'LL", "'Ve", " the", " The", "1234", "ΑΒΓ", "ﬆ", "ǰ", "e\u0301"]
tk = Tokenizer.from_file(d + "/tokenizer.json")
texts = ["".join(rng.choice(alpha) for _ in range(rng.randint(0, 40))) for _ in range(1500)]
def run(args, inp):
    p = subprocess.run([s2d, "tokenize", "--tokenizer", d] + args, input=inp.encode(), capture_output=True, check=True)
    return p.stdout.decode().split("\n")[:-1]
got = [json.loads(l) for l in run([], "".join(json.dumps(t) + "\n" for t in texts))]
bad_enc = sum(tk.encode(t, add_special_tokens=False).ids != g for t, g in zip(texts, got))
vs = tk.get_vocab_size()
idl = [[rng.randrange(vs) if rng.random() < 0.3 else rng.randrange(256) for _ in range(rng.randint(1, 8))] for _ in range(1500)]
dec = [json.loads(l) for l in run(["--decode"], "".join(json.dumps(i) + "\n" for i in idl))]
bad_dec = sum(tk.decode(i, skip_special_tokens=False) != x for i, x in zip(idl, dec))
print(len(texts), len(got), bad_enc, len(idl), len(dec), bad_dec)
EOF
)
    read -r n_t n_got bad_enc n_ids n_dec bad_dec <<<"$out"
    check "$t: HF tokenizers agrees on ${n_t:-?} random texts (got ${n_got:-?}, ${bad_enc:-?} differ)" \
      test "${n_got:-0}" = 1500 -a "${bad_enc:-1}" = 0
    check "$t: HF tokenizers agrees on ${n_ids:-?} random id decodes (${bad_dec:-?} differ)" \
      test "${n_dec:-0}" = 1500 -a "${bad_dec:-1}" = 0
  done
else
  echo "note: Python package tokenizers not importable; HF differential check skipped"
fi
summary
