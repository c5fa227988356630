#!/usr/bin/env python3
"""A custom reward for `s2d train` (stage key `reward: {command: "python3 examples/reward_length_penalty.py"}`).

s2d starts this once and writes one JSON object per line on stdin:
    {"id": "17", "prompt": "...", "response": "...", "answer": "..."}
and reads one JSON object per line back: {"reward": <finite number>, <name>: <number or bool>, ...}.
Extra numeric fields are averaged per step into metrics.jsonl as "reward/<name>". Read until end of file,
then exit. Standard library only.

This one: 1 for a final \\boxed{...} equal to the reference (after removing spaces), minus a small penalty
per character of the response beyond PENALTY_FREE characters (so among correct answers, shorter ones win).
"""
import json
import sys

PENALTY_FREE = 200     # characters without penalty
PENALTY_PER_CHAR = 1e-3
MAX_PENALTY = 0.5


def last_boxed(text):
    """Content of the last \\boxed{...} (braces matched), or None."""
    at = text.rfind("\\boxed{")
    if at < 0:
        return None
    i, depth, start = at + len("\\boxed{"), 1, at + len("\\boxed{")
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return None


def norm(s):
    return "".join(s.split())


def score(rec):
    got = last_boxed(rec["response"])
    ref = last_boxed(rec["answer"]) or rec["answer"]
    correct = got is not None and norm(got) == norm(ref)
    length = len(rec["response"])
    penalty = min(MAX_PENALTY, PENALTY_PER_CHAR * max(0, length - PENALTY_FREE))
    return {"reward": (1.0 if correct else 0.0) - penalty, "correct": correct, "length": length,
            "penalty": penalty}


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        out = score(json.loads(line))
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()  # one reply per request: s2d waits for it


if __name__ == "__main__":
    main()
