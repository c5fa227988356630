#!/usr/bin/env python3
"""bench_torch.py: the PyTorch / HF transformers side of bench_model.sh (CPU, fp32, same thread count).

  bench_torch.py train MODEL_DIR SEQS SEQ_LEN STEPS     fwd + bwd of the mean next-token NLL (loss.backward())
                                                        on random weights with MODEL_DIR's config.json
  bench_torch.py generate MODEL_DIR BATCH PROMPT_LEN NEW   HF model.generate, greedy, exactly NEW new tokens per
                                                        prompt (weights loaded from MODEL_DIR)
Threads: torch.set_num_threads(OMP_NUM_THREADS). Prints "key value" lines that bench_model.sh reads."""
import os
import sys
import time

try:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
except Exception as e:  # noqa: BLE001 - any import failure means "no torch here"
    print(f"torch_unavailable {type(e).__name__}: {e}")
    sys.exit(3)


def tokens_for(n, vocab, salt):
    return torch.tensor([((i + salt) * 2654435761) % vocab for i in range(n)], dtype=torch.long)


def train(model_dir, seqs, seq_len, steps):
    cfg = AutoConfig.from_pretrained(model_dir)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).train()
    ids = tokens_for(seqs * seq_len, cfg.vocab_size, 0).view(seqs, seq_len)
    times = []
    for step in range(steps + 1):  # step 0 warms up
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=False)
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, cfg.vocab_size), ids[:, 1:].reshape(-1))
        loss.backward()
        if step > 0:
            times.append(time.perf_counter() - t0)
    best = min(times)  # as bench_train: the best step, robust to other jobs on the machine
    print(f"torch_train_tokens_per_s {seqs * seq_len / best:.2f}")
    print(f"torch_train_seconds_per_step {best:.4f}")


def generate(model_dir, batch, prompt_len, new):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    ids = torch.stack([tokens_for(prompt_len, vocab, 1000 * b + 1) for b in range(batch)])
    kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new, min_new_tokens=new,
              pad_token_id=0, use_cache=True)
    with torch.no_grad():
        model.generate(input_ids=ids[:, :prompt_len], **{**kw, "max_new_tokens": 2, "min_new_tokens": 2})  # warm
        dt = float("inf")
        for _ in range(2):  # best of two: short runs are noisy
            t0 = time.perf_counter()
            out = model.generate(input_ids=ids, **kw)
            dt = min(dt, time.perf_counter() - t0)
    assert out.shape[1] == prompt_len + new, out.shape
    print(f"torch_generate_tokens_per_s {batch * new / dt:.2f}")
    print(f"torch_generate_seconds {dt:.4f}")


def main():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    mode, model_dir, a, b, c = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    if mode == "train":
        train(model_dir, a, b, c)
    elif mode == "generate":
        generate(model_dir, a, b, c)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
