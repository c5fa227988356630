/* chat.h: chat templates for one user turn plus the assistant generation prompt, byte for byte what
 * Hugging Face's apply_chat_template(messages, tokenize=False, add_generation_prompt=True) renders with the
 * jinja templates in the models' tokenizer_config.json (tests/fixtures/chat/ holds the references):
 *
 *   qwen3          "<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"   (enable_thinking=True)
 *   qwen3-nothink  the same + "<think>\n\n</think>\n\n"                               (enable_thinking=False)
 *   llama3         "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{content|trim}<|eot_id|>"
 *                  "<|start_header_id|>assistant<|end_header_id|>\n\n"  (the Llama 3 template shipped with
 *                  the llama3_1 tokenizer files: no system header; jinja's trim = Python str.strip(), which
 *                  also strips Unicode whitespace such as U+00A0 and U+3000)
 *   none           {content} as is
 *
 * The user content for a math problem is "{problem}\n{instruction}" (the Qwen2.5-Math / DeepSeek-R1 eval
 * convention); the instruction is configurable. Special-token text inside the content is not escaped: the
 * tokenizer decides what it becomes. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "core/common.h"

typedef enum { CHAT_NONE, CHAT_QWEN3, CHAT_QWEN3_NOTHINK, CHAT_LLAMA3 } chat_template;

#define CHAT_DEFAULT_INSTRUCTION "Please reason step by step, and put your final answer within \\boxed{}."

/* "none" | "qwen3" | "qwen3-nothink" | "llama3"; the error lists the names. */
bool chat_template_parse(const char *name, chat_template *out, s2d_err *err);
const char *chat_template_name(chat_template t);

/* "{problem}\n{instruction}"; just the problem when the instruction is NULL or empty, or when the problem
 * already ends with it (AIME files that carry the instruction). malloc'd. */
char *chat_user_content(const char *problem, const char *instruction);
/* The rendered prompt for one user message (malloc'd). */
char *chat_render(chat_template t, const char *content);
/* chat_render(t, chat_user_content(problem, instruction)). */
char *chat_render_problem(chat_template t, const char *problem, const char *instruction);

/* Token ids that end a completion under this template (from the models' generation_config.json):
 * Qwen3: 151645 <|im_end|>, 151643 <|endoftext|>; Llama 3.1: 128001, 128008, 128009. Writes at most max
 * ids, returns the count; 0 for "none" (use the tokenizer's end-of-text token). */
int chat_stop_ids(chat_template t, int32_t *ids, int max);
/* The same stops as token strings ("<|im_end|>", "<|endoftext|>"; "<|end_of_text|>", "<|eom_id|>",
 * "<|eot_id|>"), for looking them up in the tokenizer actually used; NULL-terminated; empty for "none". */
const char *const *chat_stop_tokens(chat_template t);

/* The built-in template that the chat_template of a tokenizer's tokenizer_config.json is. tok_path: the tokenizer
 * directory or its tokenizer.json (tokenizer_config.json is looked up next to it). Templates are recognised byte
 * for byte (length and FNV-1a 64 of the jinja text): Qwen3's (-> qwen3; qwen3-nothink is the same jinja with
 * enable_thinking=False) and the Llama 3 one shipped with the Llama 3.1 tokenizer files (-> llama3); copies in
 * tests/fixtures/tokenizers/. *found = false (and true returned) when there is no tokenizer_config.json or it
 * has no chat_template string; false + err naming the file when the template is none of the built-in ones. */
bool chat_template_from_tokenizer(const char *tok_path, bool *found, chat_template *out, s2d_err *err);
/* The template of an eval or a training run, one rule for both: `name` when it is given and not "auto" (*from =
 * named_from, e.g. "--template" or "prompt.template"); else the built-in template that the tokenizer_config.json
 * chat_template of the tokenizers tok_paths [n] is (NULL entries and tokenizers without one skipped; those that
 * have one must agree; *from = "the tokenizer's tokenizer_config.json"); else the template named fallback
 * (*from = fallback_from). An unknown chat_template is refused with a hint to give named_from. */
bool chat_template_choose(const char *name, const char *named_from, const char *const *tok_paths, int n,
                          const char *fallback, const char *fallback_from, chat_template *out, const char **from,
                          s2d_err *err);
/* Warns "WHO: the chat template T (from FROM) does not fit the model's type TYPE (MODEL)" when it does not fit
 * (chat_template_fits); returns whether it fits. */
bool chat_template_warn_fit(const char *who, chat_template t, const char *from, const char *model_type,
                            const char *model);
/* Does template t fit a model whose config.json model_type is model_type ("qwen3", "qwen2", "llama")? "none"
 * fits every model; unknown model types fit every template. */
bool chat_template_fits(chat_template t, const char *model_type);

/* Python str.strip() on UTF-8 (bytes that are not valid UTF-8 are kept): [*begin, *end). Exposed for tests. */
void chat_py_strip(const char *s, const char **begin, const char **end);
