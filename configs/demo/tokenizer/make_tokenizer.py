#!/usr/bin/env python3
"""Writes tokenizer.json: the demo's byte-level BPE tokenizer (GPT-2 byte alphabet, a few merges for the
words the chat template and the arithmetic task use, and Qwen-style special tokens). Run from this directory:
    python3 make_tokenizer.py > tokenizer.json
Ids: bytes 0..255 are ids 0..255 (id = byte value), then the merged tokens, then the added tokens."""
import json


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


b2u = bytes_to_unicode()
vocab = {b2u[b]: b for b in range(256)}
merges = []
# Words built left to right, one merge per added letter.
for word in ["boxed", "user", "assistant", "Ġ\\", "think"]:
    w = word.replace("Ġ", b2u[ord(" ")])
    cur = w[0]
    for ch in w[1:]:
        merges.append(f"{cur} {ch}")
        cur = cur + ch
        if cur not in vocab:
            vocab[cur] = len(vocab)
specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
added = []
for s in specials:
    added.append({"id": len(vocab) + len(added), "content": s, "single_word": False, "lstrip": False,
                  "rstrip": False, "normalized": False, "special": True})
tok = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": added,
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "post_processor": None,
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
              "vocab": vocab, "merges": merges},
}
print(json.dumps(tok, ensure_ascii=False, indent=1))
