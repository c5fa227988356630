#!/usr/bin/env python3
"""bench_gpu.py: the PyTorch + transformers peer of s2d's GPU benchmark (tests/gpu/run.sh), same shapes.

Models are built from transformers' Qwen3Config with the qwen3-0.6b / qwen3-1.7b shapes of s2d's presets
(src/model/model_config.c), random weights, bf16, on one CUDA device. Measured, each the best of --steps timed
repetitions after one warm-up:
  train    forward + backward of the mean next-token NLL + a fused AdamW step (bf16 weights, as HF eager
           training without AMP); tokens/s and MFU = 6 N_nonembed + 12 L d_attn S flops/token over the peak
  decode   model.generate, greedy, exactly --new-tokens new tokens for a batch of --gen-batch prompts of
           --prompt-len tokens (KV cache); new tokens/s
  score    no-grad forward + log_softmax gather of the next token (teacher log-probs); tokens/s
Prints one table row per model plus "key value" lines for scripts.

usage: bench_gpu.py [--models qwen3-0.6b qwen3-1.7b] [--seqs 8] [--seq-len 1024] [--steps 3]
                    [--gen-batch 32] [--prompt-len 128] [--new-tokens 128] [--peak-tflops auto] [--attn sdpa]
"""
import argparse
import sys
import time

try:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM
except Exception as e:  # noqa: BLE001 - any import failure means "no torch here"
    print(f"torch_unavailable {type(e).__name__}: {e}")
    sys.exit(3)

# s2d's presets (model_config.c): hidden, layers, heads, kv heads, head_dim, intermediate
SHAPES = {
    "qwen3-0.6b": dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       head_dim=128, intermediate_size=3072),
    "qwen3-1.7b": dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       head_dim=128, intermediate_size=6144),
}
# Dense bf16 tensor-core peak (no sparsity), by device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}


def make_config(name, attn):
    cfg = Qwen3Config(vocab_size=151936, max_position_embeddings=40960, rope_theta=1000000.0, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, torch_dtype="bfloat16", **SHAPES[name])
    cfg._attn_implementation = attn
    return cfg


def non_embedding_params(model):
    n = sum(p.numel() for p in model.parameters())
    return n - model.model.embed_tokens.weight.numel()


def tokens(shape, vocab, salt):
    n = 1
    for d in shape:
        n *= d
    idx = torch.arange(n, dtype=torch.int64) + salt
    return ((idx * 2654435761) % vocab).view(*shape)


def timed(fn, steps):
    fn()  # warm-up: kernels, allocator, cuBLAS heuristics
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_train(model, cfg, seqs, seq_len, steps, peak):
    model.train()
    ids = tokens((seqs, seq_len), cfg.vocab_size, 0).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()

    t = timed(step, steps)
    ntok = seqs * seq_len
    flops_per_tok = 6 * non_embedding_params(model) + 12 * cfg.num_hidden_layers * (
        cfg.num_attention_heads * cfg.head_dim) * seq_len
    # The tied LM head is a real GEMM of the step: count it (2 V d per token forward, x3 with backward).
    flops_per_tok += 6 * cfg.vocab_size * cfg.hidden_size
    tps = ntok / t
    mfu = tps * flops_per_tok / (peak * 1e12) if peak else float("nan")
    del opt
    model.zero_grad(set_to_none=True)
    return tps, mfu


@torch.no_grad()
def bench_score(model, cfg, seqs, seq_len, steps):
    model.eval()
    ids = tokens((seqs, seq_len), cfg.vocab_size, 1).cuda()

    def step():
        logits = model(input_ids=ids).logits[:, :-1].float()
        lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None])
        return lp.sum()

    t = timed(step, steps)
    return seqs * seq_len / t


@torch.no_grad()
def bench_decode(model, cfg, batch, prompt_len, new_tokens, steps):
    model.eval()
    ids = tokens((batch, prompt_len), cfg.vocab_size, 2).cuda()
    attn = torch.ones_like(ids)

    def step():
        model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       do_sample=False, pad_token_id=0, eos_token_id=None)

    t = timed(step, steps)
    return batch * new_tokens / t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["qwen3-0.6b", "qwen3-1.7b"], choices=sorted(SHAPES))
    ap.add_argument("--seqs", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--gen-batch", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--peak-tflops", default="auto", help="dense bf16 peak of the device, or auto (by name)")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("cuda_unavailable torch sees no CUDA device")
        return 3
    dev = torch.cuda.get_device_name(0)
    peak = None
    if a.peak_tflops == "auto":
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in dev), None)
    else:
        peak = float(a.peak_tflops)
    print(f"device {dev.replace(' ', '_')}")
    print(f"peak_tflops {peak if peak else 'unknown'}")
    print(f"torch {torch.__version__}")
    rows = []
    for name in a.models:
        torch.manual_seed(0)
        cfg = make_config(name, a.attn)
        model = Qwen3ForCausalLM(cfg).to(device="cuda", dtype=torch.bfloat16)
        tps, mfu = bench_train(model, cfg, a.seqs, a.seq_len, a.steps, peak)
        score = bench_score(model, cfg, a.seqs, a.seq_len, a.steps)
        dec = bench_decode(model, cfg, a.gen_batch, a.prompt_len, a.new_tokens, a.steps)
        key = name.replace("-", "_").replace(".", "_")
        print(f"torch_train_tokens_per_s_{key} {tps:.1f}")
        print(f"torch_train_mfu_{key} {mfu:.4f}")
        print(f"torch_score_tokens_per_s_{key} {score:.1f}")
        print(f"torch_decode_tokens_per_s_{key} {dec:.1f}")
        rows.append((name, tps, mfu, score, dec))
        del model
        torch.cuda.empty_cache()
    print()
    print(f"{'model':<12} {'train tok/s':>12} {'MFU':>7} {'score tok/s':>12} {'decode tok/s':>13}")
    for name, tps, mfu, score, dec in rows:
        print(f"{name:<12} {tps:>12.0f} {mfu * 100:>6.1f}% {score:>12.0f} {dec:>13.0f}")
    print(f"(train/score: {a.seqs} x {a.seq_len} tokens; decode: batch {a.gen_batch}, prompt {a.prompt_len}, "
          f"{a.new_tokens} new tokens; bf16, attention {a.attn})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
