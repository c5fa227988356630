#!/usr/bin/env bash
# s2d export + s2d inspect: a checkpoint written by the HDF5 layer (build/tests/test_h5io --write-checkpoint)
# exports to an HF directory that scores exactly like the original model; h5py reads the checkpoint and the
# rollout log / metrics (values recomputed here from their closed forms); bad input fails cleanly.
. "$(dirname "$0")/lib.sh"
export S2D_LOG=warn
H5TEST="$(dirname "$S2D")/tests/test_h5io"
cd "$WORK"

check "test_h5io helper is built" test -x "$H5TEST"
check "init-model qwen3-tiny" "$S2D" init-model --preset qwen3-tiny --out orig --seed 9
check "write a checkpoint from orig" "$H5TEST" --write-checkpoint ck.h5 orig
check "checkpoint, rollout log and metrics exist, no temp files" bash -c "test -s ck.h5 -a -s ck.h5.rollouts.h5 -a -s ck.h5.metrics.h5 && ! ls | grep -q tmp"

printf '[1,2,3,4,5,6,7,8]\n[7,300,2]\n[10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29]\n' > in.jsonl
"$S2D" logprobs --model orig < in.jsonl > want.jsonl
# a tokenizer that fits the 512-token model (the tiny models' byte-level one), with a tokenizer_config.json to copy
mkdir tok && cp "$S2D_ROOT/tests/fixtures/models/tiny-teacher/tokenizer.json" tok/ && echo '{"eos_token": "x"}' > tok/tokenizer_config.json
check "export policy (f32) with tokenizer files" "$S2D" export ck.h5 --model policy --out exp --tokenizer tok
check "export wrote config, weights, tokenizer files" test -s exp/config.json -a -s exp/model.safetensors -a -s exp/tokenizer.json -a -s exp/tokenizer_config.json -a -s exp/generation_config.json
check "the tokenizer's own tokenizer_config.json is copied" grep -q '"eos_token": "x"' exp/tokenizer_config.json
expect_error "a tokenizer larger than the model's vocabulary is refused" "151669 tokens, but the model's vocabulary has 512" \
  "$S2D" export ck.h5 --model policy --out big --tokenizer "$S2D_ROOT/tests/fixtures/tokenizers/qwen3"
check "nothing written for the refused export" test ! -e big
check "exported logprobs identical to the original model's" bash -c "'$S2D' logprobs --model exp < in.jsonl | cmp -s - want.jsonl"
check "export policy as bf16" "$S2D" export ck.h5 --model policy --out exp16 --dtype bf16
check "bf16 export is smaller" bash -c "[ \$(stat -c %s exp16/model.safetensors) -lt \$(stat -c %s exp/model.safetensors) ]"
# teacher was stored as bf16: it equals the original rounded to bf16, i.e. the bf16 export of policy
check "export teacher (stored bf16, exported as stored)" "$S2D" export ck.h5 --model teacher --out expt
check "bf16-stored teacher scores like the bf16 export of policy" bash -c "'$S2D' logprobs --model expt < in.jsonl > t.jsonl && '$S2D' logprobs --model exp16 < in.jsonl | cmp -s - t.jsonl"
check "bf16 changes the scores (the comparison can fail)" bash -c "! cmp -s t.jsonl want.jsonl"

# inspect
"$S2D" inspect ck.h5 > insp.txt 2>insp.err
check "inspect: kind" grep -q '^kind: checkpoint (format s2d-checkpoint version 1, complete)' insp.txt
check "inspect: stage and step" bash -c "grep -qx 'stage: 3 (student_rl)' insp.txt && grep -qx 'step: 25' insp.txt"
NPARAMS=$(python3 -c "import json;c=json.load(open('orig/config.json'));H=c['hidden_size'];V=c['vocab_size'];L=c['num_hidden_layers'];I=c['intermediate_size'];d=c['head_dim'];n=c['num_attention_heads'];k=c['num_key_value_heads'];print(V*H*(1 if c.get('tie_word_embeddings') else 2)+H+L*(2*H+2*d+H*n*d+2*H*k*d+n*d*H+3*H*I))")
NT=$(python3 -c "import json;c=json.load(open('orig/config.json'));print(2+(0 if c.get('tie_word_embeddings') else 1)+11*c['num_hidden_layers'])")
check "inspect: policy line with tensor and parameter counts ($NT, $NPARAMS) and optimizer" grep -q "^model policy: $NT tensors, $NPARAMS parameters, f32, qwen3.*optimizer state (AdamW step 7)" insp.txt
check "inspect: teacher is bf16" grep -q "^model teacher: $NT tensors, $NPARAMS parameters, bf16" insp.txt
check "inspect: cursor state" grep -qx 'state cursor.arith_train: 42 1 17' insp.txt
check "inspect: config excerpt" grep -qx '  pipeline: cli-test' insp.txt
check "inspect --tensors lists shapes" bash -c "'$S2D' inspect ck.h5 --tensors | grep -qx '  model.embed_tokens.weight \[512, 64\]'"
"$S2D" inspect ck.h5.rollouts.h5 > r.txt
# 2 + 3 + 4 sequences; seq j of step k has 3 + j + k tokens; rewards j % 2
check "inspect rollouts: steps/sequences/tokens/mean reward" bash -c "grep -qx 'steps: 3' r.txt && grep -qx 'sequences: 9' r.txt && grep -qx 'tokens: $(python3 -c 'print(sum(3+j+k for k in range(3) for j in range(k+2)))')' r.txt && grep -qx 'mean reward: 0.444444 (over 9 sequences)' r.txt"
check "inspect metrics" bash -c "'$S2D' inspect ck.h5.metrics.h5 | grep -qx 'rows: 3'"

# h5py: the files are plain HDF5 with the documented layout
PY=
for p in python3 /usr/bin/python3; do if "$p" -c 'import h5py' 2>/dev/null; then PY=$p; break; fi; done
if [ -n "$PY" ]; then
  cat > h5check.py <<'PYEOF'
import json, struct, sys
import h5py, numpy as np
ck, orig = sys.argv[1], sys.argv[2]
# reference weights straight from the original safetensors file (independent of s2d's readers)
raw = open(orig + "/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
def tensor(name):
    h = hdr[name]; a, b = h["data_offsets"]
    assert h["dtype"] == "F32"
    return np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(h["shape"])
with h5py.File(ck, "r") as f:
    # strings are fixed-length (h5py gives bytes): never in the global heap, which a flipped byte can crash
    assert f.attrs["format"] == b"s2d-checkpoint" and f.attrs["complete"] == 1 and f.attrs["step"] == 25
    assert f["config"][()].decode() == "pipeline: cli-test\nseed: 9\n"
    pol, tea = f["models/policy"], f["models/teacher"]
    names = [k for k in hdr if k != "__metadata__"]
    assert sorted(pol.keys()) == sorted(names), "tensor names"
    order = []
    for k in names:
        w = tensor(k)
        assert pol[k].dtype == np.float32 and np.array_equal(pol[k][()], w), k
        assert tea[k].dtype == np.uint16 and tea[k].attrs["dtype"] == b"bf16"
        # bf16 = fp32 rounded to nearest even in the top 16 bits
        u = w.view(np.uint32).astype(np.uint64)
        rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        assert np.array_equal(tea[k][()], rounded), k + " bf16"
    assert json.loads(pol.attrs["config_json"])["hidden_size"] == 64
    m = f["optim/policy/m"][()]
    i = np.arange(m.size)
    assert m.dtype == np.float32 and np.allclose(m, np.sin(i.astype(np.float32)), rtol=0, atol=1e-6)  # C sinf vs numpy: ulps
    assert np.array_equal(f["optim/policy/v"][()], (i % 13).astype(np.float32) / np.float32(7))
    assert f["optim/policy"].attrs["step"] == 7 and m.size == pol.attrs["n_params"]
    assert list(f["state/cursor.arith_train"][()]) == [42, 1, 17]
    # every dataset has its checksum: FNV-1a 64 over the data as little-endian 64-bit words, then tail bytes
    def cksum(b):
        h, M = 0xcbf29ce484222325, (1 << 64) - 1
        n8 = len(b) // 8 * 8
        for w in np.frombuffer(b[:n8], dtype="<u8").tolist(): h = ((h ^ w) * 0x100000001b3) & M
        for c in b[n8:]: h = ((h ^ c) * 0x100000001b3) & M
        return h
    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            data = obj[()]
            b = data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()
            assert int(obj.attrs["checksum"]) == cksum(b), name
    f.visititems(visit)
with h5py.File(ck + ".rollouts.h5", "r") as f:
    off, tok = f["seqs/offsets"][()], f["tokens"][()]
    beh, tea, ref = f["logp/behaviour"][()], f["logp/teacher"][()], f["logp/reference"][()]
    s = 0
    for k in range(3):
        assert f["steps/step"][k] == 10 + k and f["steps/stage"][k] == (0 if k < 2 else 1)
        assert f["steps/n_seqs"][k] == k + 2 and f["steps/seq_begin"][k] == s and f["steps/policy_version"][k] == k
        for j in range(k + 2):
            t = np.arange(3 + j + k)
            seg = slice(off[s], off[s + 1])
            assert np.array_equal(tok[seg], (100 * k + 10 * j + t) % 512)
            assert np.array_equal(beh[seg], np.float32(-0.01) * (t + 1).astype(np.float32) - np.float32(k))
            assert np.array_equal(tea[seg], np.float32(-0.5) * t.astype(np.float32)) if k % 2 else np.isnan(tea[seg]).all()
            assert np.isnan(ref[seg]).all()
            assert f["seqs/reward"][s] == j % 2 and f["seqs/advantage"][s] == j - 0.5 and f["seqs/prompt_len"][s] == 2
            s += 1
    assert s == 9 and off[-1] == tok.size
with h5py.File(ck + ".metrics.h5", "r") as f:
    assert list(f["step"][()]) == [10, 11, 12] and list(f["stage"][()]) == [0, 0, 1]
    assert np.allclose(f["loss"][()], [1, 0.5, 1 / 3], rtol=0, atol=0) and list(f["reward_mean"][()]) == [0, 0.25, 0.5]
print("h5py ok")
PYEOF
  check "h5py reads checkpoint tensors, optimizer, state, rollout log and metrics as documented" bash -c "'$PY' h5check.py ck.h5 orig | grep -qx 'h5py ok'"
else
  echo "note: no python3 with h5py (tried python3, /usr/bin/python3): h5py checks skipped" >&2
fi

# bad input: clear errors, non-zero exit, no output directory or temp files
expect_error "missing checkpoint file" "nothere.h5: cannot read" "$S2D" export nothere.h5 --out bad1
echo "plain text" > notes.txt
expect_error "not HDF5" "notes.txt: not an HDF5 file" "$S2D" export notes.txt --out bad2
expect_error "rollout log is not a checkpoint" "not an s2d checkpoint" "$S2D" export ck.h5.rollouts.h5 --out bad3
expect_error "two models, no --model" "holds 2 models \(policy, teacher\).*--model" "$S2D" export ck.h5 --out bad4
expect_error "unknown model name" "ck.h5: no model 'student' in the checkpoint \(it has: policy, teacher\)" "$S2D" export ck.h5 --model student --out bad5
expect_error "existing --out is refused" "exp: already exists" "$S2D" export ck.h5 --model policy --out exp
expect_error "tokenizer dir without tokenizer.json" "orig/tokenizer.json: cannot" "$S2D" export ck.h5 --model policy --out bad6 --tokenizer orig
expect_error "bad dtype" "dtype" "$S2D" export ck.h5 --model policy --out bad7 --dtype f8
head -c 20000 ck.h5 > trunc.h5
expect_error "truncated checkpoint names the file" "trunc.h5" "$S2D" export trunc.h5 --model policy --out bad8
check "no partial output directories or temp files" bash -c "[ -z \"\$(ls -d bad* 2>/dev/null)\" ] && ! ls | grep -q tmp"
expect_error "inspect: missing file" "nothere.h5: cannot read" "$S2D" inspect nothere.h5
expect_error "inspect: not HDF5" "notes.txt: not an HDF5 file" "$S2D" inspect notes.txt
check "inspect: nothing on stdout on bad input" bash -c "! '$S2D' inspect notes.txt 2>/dev/null | grep -q ."
expect_error "inspect: no file" "FILE.h5" "$S2D" inspect

summary
