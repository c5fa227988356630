#!/usr/bin/env python3
"""Makes the safetensors fixtures for tests/unit/test_safetensors.c with PyTorch + the `safetensors` library.

Writes into tests/fixtures/safetensors/ (or the directory given as argv[1]):
  tiny.safetensors     F32, BF16, F16, I32, I64 tensors and a scalar, with __metadata__. The *_src tensors hold
                       fp32 inputs (ties, NaN, inf, subnormals, overflow, random bit patterns); bf16_of_src and
                       f16_of_src hold torch's conversion of them, the reference our half.c must match.
  writer_ref.safetensors  what safetensors.torch.save_file writes for BF16 tensors + an I32 tensor with
                       {"format": "pt"}: s2d's writer must reproduce it byte for byte.
  sharded/             two shards + model.safetensors.index.json, as Hugging Face lays them out.
  expected.json        what a reader must find, computed here from the torch tensors and the raw header (not by s2d).
Run: python3 tools/make_safetensors_fixture.py
"""
import json
import os
import struct
import sys

import torch
from safetensors.torch import save_file

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "safetensors")
os.makedirs(os.path.join(out, "sharded"), exist_ok=True)
gen = torch.Generator().manual_seed(1234)


def f32_from_bits(bits):
    return torch.tensor([b if b < 2**31 else b - 2**32 for b in bits], dtype=torch.int32).view(torch.float32)


def bits_u32(t):
    return [v & 0xFFFFFFFF for v in t.contiguous().view(torch.int32).tolist()]


def bits_u16(t):
    return [v & 0xFFFF for v in t.contiguous().view(torch.int16).tolist()]


# fp32 -> bf16 inputs: ties at every kept-bit parity, just above/below ties, NaN/inf, subnormals, overflow.
bf16_bits = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001,
             0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F8000, 0x7F7F7FFF, 0x00000001, 0x80000001, 0x00007FFF, 0x00008000,
             0x00018000, 0x007FFFFF, 0x00800000, 0x3F800000, 0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF,
             0xBF808000, 0xBF818000, 0x3FFF8000, 0x4B7F8000, 0x3F7FFFFF, 0x3F7F8000]
bf16_bits += [int(v) & 0xFFFFFFFF for v in torch.randint(-2**31, 2**31 - 1, (400,), generator=gen, dtype=torch.int64)]
bf16_bits += [(int(v) & 0xFFFF0000) | 0x8000 for v in torch.randint(0, 2**32 - 1, (100,), generator=gen, dtype=torch.int64)]
bf16_src = f32_from_bits(bf16_bits)

# fp32 -> f16 inputs: around max (65504) and the overflow tie (65520), normal/subnormal boundary, subnormal ties,
# underflow to zero (2^-25 is a tie with 0), NaN/inf, random values across the f16 range.
f16_vals = [0.0, -0.0, 1.0, -1.0, 65504.0, 65519.996, 65520.0, 65536.0, -65520.0, 1e10, 2.0**-14, 2.0**-24,
            2.0**-25, 2.0**-25 * 1.0000001, 2.0**-26, 3 * 2.0**-25, 5 * 2.0**-25, 2.0**-14 - 2.0**-25,
            2.0**-14 - 2.0**-26, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 1.0 + 2.0**-11 + 2.0**-20, 1e-8, -1e-7,
            0.1, 0.2, 0.3, 1.0 / 3.0, 2048.5, 2049.0, 4097.0, 4099.0]
f16_src = torch.cat([torch.tensor(f16_vals, dtype=torch.float32),
                     f32_from_bits([0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0x00000001]),
                     torch.randn(300, generator=gen) * 1000,
                     torch.exp(torch.empty(300).uniform_(-20, 11.2, generator=gen)) * torch.sign(torch.randn(300, generator=gen))])

tensors = {
    "w_f32": torch.randn(3, 4, generator=gen),
    "w_bf16": torch.randn(2, 3, 2, generator=gen).to(torch.bfloat16),
    "w_f16": torch.randn(5, generator=gen).to(torch.float16),
    "tokens": torch.tensor([[151644, 872, 198, 0, -1], [7, 8, 9, 2147483647, -2147483648]], dtype=torch.int32),
    "positions": torch.tensor([0, 1, 2, 2**40], dtype=torch.int64),
    "scalar": torch.tensor(2.5, dtype=torch.float32),
    "empty": torch.zeros(0, 3, dtype=torch.float32),
    "bf16_src": bf16_src,
    "bf16_of_src": bf16_src.to(torch.bfloat16),
    "f16_src": f16_src,
    "f16_of_src": f16_src.to(torch.float16),
}
meta = {"format": "pt", "producer": "tools/make_safetensors_fixture.py"}
tiny = os.path.join(out, "tiny.safetensors")
save_file(tensors, tiny, metadata=meta)

# The reader's ground truth: the header as Python's json sees it, plus the values from torch.
with open(tiny, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
expected = {"file_size": os.path.getsize(tiny), "header_len": n, "metadata": header.pop("__metadata__"), "tensors": {}}
for name, t in tensors.items():
    e = dict(header[name])
    if t.dtype == torch.float32:
        e["bits"] = bits_u32(t.flatten())
    elif t.dtype in (torch.bfloat16, torch.float16):
        e["bits"] = bits_u16(t.flatten())
        e["as_f32_bits"] = bits_u32(t.float().flatten())
    else:
        e["ints"] = t.flatten().tolist()
    expected["tensors"][name] = e
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(expected, f, separators=(",", ":"), sort_keys=True)
    f.write("\n")

# Byte-exact reference for s2d's writer: BF16 floats converted from the fp32 values given in expected.json,
# plus raw I32, with one metadata key (a single key keeps the reference's HashMap order deterministic).
ref = {"b.weight": tensors["w_f32"].to(torch.bfloat16), "a.weight": tensors["bf16_src"][7:23].reshape(4, 4).to(torch.bfloat16),
       "ids": tensors["tokens"], "z": tensors["scalar"].to(torch.bfloat16)}
save_file(ref, os.path.join(out, "writer_ref.safetensors"), metadata={"format": "pt"})

# Sharded layout as Hugging Face writes it.
shard_a = {"model.embed_tokens.weight": torch.randn(4, 3, generator=gen), "model.norm.weight": torch.ones(3)}
shard_b = {"lm_head.weight": torch.randn(4, 3, generator=gen).to(torch.bfloat16)}
names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
save_file(shard_a, os.path.join(out, "sharded", names[0]), metadata={"format": "pt"})
save_file(shard_b, os.path.join(out, "sharded", names[1]), metadata={"format": "pt"})
weight_map = {k: names[0] for k in shard_a} | {k: names[1] for k in shard_b}
total = sum(t.numel() * t.element_size() for t in list(shard_a.values()) + list(shard_b.values()))
with open(os.path.join(out, "sharded", "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
expected_sharded = {k: bits_u32(t.float().flatten()) for k, t in (shard_a | shard_b).items()}
with open(os.path.join(out, "sharded", "expected.json"), "w") as f:
    json.dump(expected_sharded, f, separators=(",", ":"), sort_keys=True)
    f.write("\n")
print("wrote fixtures to", os.path.abspath(out))
