#!/usr/bin/env python3
"""make_fixtures.py: PyTorch / HF transformers reference fixtures for the s2d parity tests.

Usage: python3 tools/make_fixtures.py [OUT_DIR [CASE ...]]      (default tests/fixtures/parity, every case)
Needs torch, transformers (>= 5) and safetensors; runs on CPU in fp32, deterministic (fixed seeds, eager
attention, single thread), so re-running it reproduces the committed files.

For every case it writes OUT_DIR/<case>/:

  config.json         HF config (save_pretrained). Rope settings appear twice, consistently: the
                      transformers-5 form `rope_parameters` {rope_type, rope_theta, ...} and the hub form
                      (top-level `rope_theta`, plus `rope_scaling` when the rope type is not "default").
  model.safetensors   F32 weights under HF names (tied models have no lm_head.weight). Every weight is random:
                      matrices/embeddings ~ N(0, 0.05^2), norm weights ~ 1 + N(0, 0.2^2) (so norm gradients
                      are exercised).
  ref.safetensors     the reference tensors (written with safetensors.torch.save_file):
      tokens              I32 [T]        a packed batch: S sequences concatenated, T = sum(seq_lens)
      seq_lens            I32 [S]        lengths of the packed sequences (unequal)
      logits              F32 [T, V]     each sequence run through HF alone (no padding), concatenated
      logprobs            F32 [T - S]    per sequence the n_i - 1 next-token log-probs
                                         log p(tokens[t+1] | tokens[..t]), concatenated in order
      loss                F32 [1]        mean over all T - S targets of -logprob
      grad.<name>         F32            d loss / d param for every HF parameter (tied: the embedding gradient
                                         includes the LM head's contribution)
      adamw_losses        F32 [5]        loss before each of 5 torch.optim.AdamW steps on the same batch/loss,
                                         from the weights in model.safetensors; each step: backward,
                                         clip_grad_norm_(1.0), AdamW step (hyper-parameters in ref.json)
      adamw_grad_norms    F32 [5]        the pre-clip global gradient norm clip_grad_norm_ returned per step
      adamw_step1.<name>  F32            every parameter after step 1 (whose gradients are exactly grad.*: lets
                                         a test check the optimizer alone, free of forward/backward rounding)
      adamw_final.<name>  F32            every parameter after step 5
      greedy_prompts      I32 [sum P_i]  prompts concatenated
      greedy_prompt_lens  I32 [P]
      greedy_out          I32 [P, N]     model.generate(do_sample=False, max_new_tokens=N), each prompt alone,
                                         no eos stopping (new tokens only)
  greedy_prompts.jsonl, greedy_out.jsonl
                      the same greedy prompts and outputs as JSON lines (one id array per line), for the CLI
                      test `s2d generate --temperature 0` (no Python needed at test time)
  ref.json            case name, model_type, the AdamW hyper-parameters (lr, betas, eps, weight_decay,
                      max_grad_norm, steps), `decay` / `no_decay` (HF names in each param group: no decay for
                      1-D norm weights and for the token embedding; lm_head, when untied, is decayed),
                      greedy N, and `greedy_min_margin` (smallest top-1 minus top-2 logit gap met during greedy
                      decoding; prompts are re-drawn until it is comfortably above fp32 noise, preferring
                      completions with >= 6 distinct tokens so they exercise the KV cache).
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

SEQ_LENS = [7, 13, 4]
ADAMW = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, max_grad_norm=1.0, steps=5)
GREEDY_N = 12
GREEDY_PROMPT_LENS = [3, 6, 1]
MIN_MARGIN = 5e-3  # greedy parity needs every argmax decided by more than fp32 rounding
MIN_DISTINCT = 6   # distinct tokens wanted in each greedy completion

COMMON = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, rms_norm_eps=1e-6,
              max_position_embeddings=128, bos_token_id=None, eos_token_id=None, pad_token_id=None)

CASES = {
    "qwen3_tied": (Qwen3Config, Qwen3ForCausalLM,
                   dict(vocab_size=512, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                        tie_word_embeddings=True, rope_parameters={"rope_type": "default",
                                                                   "rope_theta": 1000000.0})),
    "llama_scaled": (LlamaConfig, LlamaForCausalLM,
                     dict(vocab_size=512, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                          tie_word_embeddings=False,
                          rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 32})),
    "qwen3_untied": (Qwen3Config, Qwen3ForCausalLM,
                     dict(vocab_size=384, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                          tie_word_embeddings=False, rope_parameters={"rope_type": "default",
                                                                      "rope_theta": 10000.0})),
    # Qwen2 / Qwen2.5 (DeepSeek-R1-Distill-Qwen, Qwen2.5-Math): q/k/v biases, no q/k norm; GQA 4,
    # head_dim = hidden / heads as in the real models, tied embeddings.
    "qwen2_tied": (Qwen2Config, Qwen2ForCausalLM,
                   dict(vocab_size=448, num_attention_heads=4, num_key_value_heads=1,
                        tie_word_embeddings=True, use_sliding_window=False,
                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
}


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):  # q/k/v biases (Qwen2): small, of either sign
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:  # RMSNorm weights
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def packed_logits_and_logprobs(model, tokens, seq_lens):
    """Runs each sequence alone; returns logits [T, V] and next-token log-probs [T - S]."""
    logits, logprobs, start = [], [], 0
    for n in seq_lens:
        ids = tokens[start:start + n].long().unsqueeze(0)
        out = model(input_ids=ids).logits[0]  # [n, V]
        lp = torch.log_softmax(out[:-1], dim=-1).gather(1, ids[0, 1:].unsqueeze(1)).squeeze(1)
        logits.append(out)
        logprobs.append(lp)
        start += n
    return torch.cat(logits), torch.cat(logprobs)


def param_groups(model):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() == 1 or "embed_tokens" in name else decay).append(name)
    return decay, no_decay


def greedy_margin(model, prompt, n):
    """Min over the n greedy steps of (top1 - top2) logit, computed without a KV cache."""
    ids, margin = prompt.long().unsqueeze(0), float("inf")
    with torch.no_grad():
        for _ in range(n):
            last = model(input_ids=ids).logits[0, -1]
            top = torch.topk(last, 2).values
            margin = min(margin, float(top[0] - top[1]))
            ids = torch.cat([ids, last.argmax().view(1, 1)], dim=1)
    return margin, ids[0, prompt.numel():]


def write_config(model, out):
    model.save_pretrained(out, safe_serialization=True)
    path = os.path.join(out, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rope = cfg["rope_parameters"]
    cfg["rope_theta"] = rope["rope_theta"]
    if rope.get("rope_type", "default") != "default":
        cfg["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    cfg["torch_dtype"] = "float32"
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def make_case(name, cfg_cls, model_cls, extra, seed, out_root):
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    cfg = cfg_cls(**COMMON, **extra)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_cls(cfg).float().eval()
    randomise(model, seed)
    write_config(model, out)

    # Reload from disk so the reference is exactly what a reader of config.json + model.safetensors gets.
    model = model_cls.from_pretrained(out, attn_implementation="eager", dtype=torch.float32).eval()
    names = [n for n, _ in model.named_parameters()]
    if cfg.tie_word_embeddings:
        assert "lm_head.weight" not in names
    V = cfg.vocab_size

    g = torch.Generator().manual_seed(seed + 1)
    T, S = sum(SEQ_LENS), len(SEQ_LENS)
    tokens = torch.randint(0, V, (T,), generator=g, dtype=torch.int32)
    seq_lens = torch.tensor(SEQ_LENS, dtype=torch.int32)

    ref = {"tokens": tokens, "seq_lens": seq_lens}
    model.zero_grad()
    logits, logprobs = packed_logits_and_logprobs(model, tokens, SEQ_LENS)
    loss = -logprobs.mean()
    loss.backward()
    ref["logits"] = logits.detach().contiguous()
    ref["logprobs"] = logprobs.detach().contiguous()
    ref["loss"] = loss.detach().reshape(1)
    for n, p in model.named_parameters():
        ref["grad." + n] = p.grad.detach().clone().contiguous()
    assert ref["logprobs"].numel() == T - S

    # Greedy decoding reference (before AdamW changes the weights). Prompts are re-drawn until every argmax
    # is decided by a clear margin, so fp32 rounding differences cannot flip a token.
    prompts, outs, min_margin = [], [], float("inf")
    for plen in GREEDY_PROMPT_LENS:
        # Among clear-margin prompts prefer varied outputs: a completion that repeats one token would pass
        # even with a broken KV cache.
        best = None
        for _attempt in range(200):
            cand = torch.randint(0, V, (plen,), generator=g, dtype=torch.int32)
            cand_margin, cand_out = greedy_margin(model, cand, GREEDY_N)
            if cand_margin <= MIN_MARGIN:
                continue
            distinct = len(set(cand_out.tolist()))
            if best is None or distinct > best[0]:
                best = (distinct, cand, cand_margin, cand_out)
            if distinct >= MIN_DISTINCT:
                break
        if best is None:
            raise RuntimeError(f"{name}: no prompt of length {plen} with greedy margin > {MIN_MARGIN}")
        _, prompt, margin, manual = best
        with torch.no_grad():
            gen = model.generate(input_ids=prompt.long().unsqueeze(0), attention_mask=torch.ones(1, plen,
                                 dtype=torch.long), do_sample=False, max_new_tokens=GREEDY_N,
                                 min_new_tokens=GREEDY_N, eos_token_id=None, pad_token_id=0)
        new = gen[0, plen:]
        assert new.numel() == GREEDY_N and torch.equal(new, manual), (name, new, manual)
        prompts.append(prompt)
        outs.append(new.to(torch.int32))
        min_margin = min(min_margin, margin)
    ref["greedy_prompts"] = torch.cat(prompts)
    ref["greedy_prompt_lens"] = torch.tensor(GREEDY_PROMPT_LENS, dtype=torch.int32)
    ref["greedy_out"] = torch.stack(outs).contiguous()

    # AdamW: 5 steps on the same batch and loss.
    decay, no_decay = param_groups(model)
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW([{"params": [params[n] for n in decay], "weight_decay": ADAMW["weight_decay"]},
                             {"params": [params[n] for n in no_decay], "weight_decay": 0.0}],
                            lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"], foreach=False)
    losses, norms = [], []
    for step in range(ADAMW["steps"]):
        opt.zero_grad()
        _, lp = packed_logits_and_logprobs(model, tokens, SEQ_LENS)
        step_loss = -lp.mean()
        step_loss.backward()
        if step == 0:
            # Step 1's gradients are exactly grad.* (same weights, deterministic), so a test can feed torch's own
            # gradients to its optimizer and check one step free of forward/backward rounding.
            for n, p in model.named_parameters():
                assert torch.equal(p.grad, ref["grad." + n]), n
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), ADAMW["max_grad_norm"],
                                                          foreach=False)))
        losses.append(step_loss.item())
        opt.step()
        if step == 0:
            for n, p in model.named_parameters():
                ref["adamw_step1." + n] = p.detach().clone().contiguous()
    ref["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)
    ref["adamw_grad_norms"] = torch.tensor(norms, dtype=torch.float32)
    for n, p in model.named_parameters():
        ref["adamw_final." + n] = p.detach().clone().contiguous()

    save_file(ref, os.path.join(out, "ref.safetensors"))
    for fname, rows in (("greedy_prompts.jsonl", prompts), ("greedy_out.jsonl", outs)):
        with open(os.path.join(out, fname), "w") as f:
            for row in rows:
                f.write(json.dumps(row.tolist(), separators=(",", ":")) + "\n")
    meta = {"case": name, "model_type": cfg.model_type, "seq_lens": SEQ_LENS,
            "adamw": {**ADAMW, "betas": list(ADAMW["betas"])}, "decay": decay, "no_decay": no_decay,
            "greedy_max_new_tokens": GREEDY_N, "greedy_prompt_lens": GREEDY_PROMPT_LENS,
            "greedy_min_margin": min_margin, "loss": float(loss), "adamw_losses": losses,
            "torch_version": torch.__version__}
    with open(os.path.join(out, "ref.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"{name}: loss {float(loss):.6f}, adamw losses {[round(x, 6) for x in losses]}, "
          f"greedy min margin {min_margin:.4f}")


def main():
    out_root = sys.argv[1] if len(sys.argv) > 1 else os.path.join("tests", "fixtures", "parity")
    only = sys.argv[2:]  # optional case names: make only these
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for i, (name, (cfg_cls, model_cls, extra)) in enumerate(CASES.items()):
        if not only or name in only:
            make_case(name, cfg_cls, model_cls, extra, 1234 + 100 * i, out_root)


if __name__ == "__main__":
    main()
