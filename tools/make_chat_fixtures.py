#!/usr/bin/env python3
"""Reference chat-template renderings for tests/unit/test_chat.c.

For each problem and template, renders one user turn plus the generation prompt with Hugging Face
transformers' apply_chat_template(..., tokenize=False, add_generation_prompt=True) from the tokenizer files
(tokenizer_config.json carries the jinja template), and writes one JSON object a line:
  {"template", "problem", "instruction", "content", "rendered"}
`content` is the user message: "{problem}\n{instruction}" (just the problem when the instruction is empty or
the problem already ends with it), the convention of the common math-eval setups (Qwen2.5-Math, DeepSeek-R1
evals). Template "none" is the content as is.

Usage: tools/make_chat_fixtures.py TOKENIZERS_DIR OUT.jsonl
  TOKENIZERS_DIR holds qwen3/ and llama3_1/ (tokenizer.json + tokenizer_config.json).
"""
import json
import sys

from transformers import AutoTokenizer

DEFAULT = "Please reason step by step, and put your final answer within \\boxed{}."

PROBLEMS = [
    ("What is $1+1$?", DEFAULT),
    # MATH-500 test/precalculus/807 (braces, backslashes, two spaces)
    ("Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.  Enter your answer in the "
     "form $(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$", DEFAULT),
    # unicode text and math symbols, braces that look like jinja
    ("Janet\u2019s ducks lay 16 eggs. Let f(x) = {x \u2208 \u211d | x\u00b2 < 2}; find \u2211 {{ n }} "
     "for {% n %} \u2264 10. \u6570\u5b66 \U0001F600", DEFAULT),
    # leading/trailing ASCII and unicode whitespace (Llama's template trims the content; Qwen's does not)
    ("  \t Find $x$ if $2x = 4$.\n\n", DEFAULT),
    ("\u3000\u00a0Find $y$.\u2028", ""),
    ("\n\nTrailing spaces only   ", ""),
    # special-token text inside the content is copied as text
    ("Is <|im_end|> or <|eot_id|> a token?", "Answer yes or no."),
    # AIME 2024 line 1: the prompt already ends with the instruction
    ("Every morning Aya goes for a $9$-kilometer-long walk.\nPlease reason step by step, and put your final "
     "answer within \\boxed{}.", DEFAULT),
    ("Windows line end\r\nsecond line", "Give the answer in \\boxed{}.\r\n"),
    # every character Python's str.isspace() accepts, on both sides (jinja's trim is str.strip())
    ("".join(chr(c) for c in range(0x110000) if chr(c).isspace()) + "x\u200by" +
     "".join(chr(c) for c in range(0x110000) if chr(c).isspace()), ""),
    ("\u200bzero-width space is not whitespace\u200b", ""),
]


def user_content(problem, instruction):
    if not instruction or problem.endswith(instruction):
        return problem
    return problem + "\n" + instruction


def main():
    tok_dir, out_path = sys.argv[1], sys.argv[2]
    qwen = AutoTokenizer.from_pretrained(f"{tok_dir}/qwen3")
    llama = AutoTokenizer.from_pretrained(f"{tok_dir}/llama3_1")
    with open(out_path, "w", encoding="utf-8") as out:
        for problem, instruction in PROBLEMS:
            content = user_content(problem, instruction)
            msgs = [{"role": "user", "content": content}]
            rendered = {
                "qwen3": qwen.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                                  enable_thinking=True),
                "qwen3-nothink": qwen.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                                          enable_thinking=False),
                "llama3": llama.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                "none": content,
            }
            for name, text in rendered.items():
                out.write(json.dumps({"template": name, "problem": problem, "instruction": instruction,
                                      "content": content, "rendered": text}, ensure_ascii=False) + "\n")
    # Stop tokens: the ids of the end-of-turn / end-of-text tokens, from the tokenizers themselves.
    print("qwen3 stop ids:", qwen.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]))
    # Llama 3.1's generation_config.json stops on 128001, 128008 (<|eom_id|> in 3.1) and 128009.
    print("llama3 stop tokens:", llama.convert_ids_to_tokens([128001, 128008, 128009]))


if __name__ == "__main__":
    main()
