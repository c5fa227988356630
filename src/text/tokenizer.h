/* tokenizer.h: Hugging Face byte-level BPE tokenizers (tokenizer.json), as used by Qwen3 and Llama 3.
 *
 * Encoding follows Hugging Face `tokenizers` step by step, so ids match it exactly:
 *  1. added tokens (special or not) are found in the raw text first: leftmost, then longest match; their
 *     lstrip / rstrip / single_word flags are honoured; tokens with normalized=true are matched in the
 *     normalized text instead;
 *  2. the remaining segments are normalized (NFC via utf8proc, or no normalizer);
 *  3. pre-tokenized: Split (the file's regex, compiled with Oniguruma like HF's onig build, behaviour
 *     Isolated) then ByteLevel (GPT-2 bytes_to_unicode; its own GPT-2 regex when use_regex is true);
 *  4. each pre-token goes through BPE by merge rank (ignore_merges: a pre-token that is itself in the
 *     vocabulary is emitted directly).
 * No special tokens are ever added (no BOS): callers add them explicitly (see tok_token_id).
 * Decoding maps each token back to bytes (ByteLevel decoder; added tokens give their content) and replaces
 * invalid UTF-8 with U+FFFD exactly like Rust's String::from_utf8_lossy.
 *
 * Anything the loader does not implement (another model type, byte_fallback, an unknown normalizer,
 * pre-tokenizer or decoder, a Split behaviour other than Isolated, truncation/padding, ...) is a load
 * error naming tokenizer.json and the JSON path, never silently different ids.
 *
 * Thread safety: a loaded tokenizer is read-only except for its pre-token cache, which an encode call
 * takes with a try-lock; concurrent tok_encode calls on one tokenizer are safe (a call that finds the
 * cache busy runs without it). tok_decode and the lookups are always safe. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

typedef struct tokenizer tokenizer;

/* Growable id vector: tok_encode appends to it. Zero-initialise ({0}) before first use. */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} tok_ids;
void tok_ids_free(tok_ids *v);

/* Growable byte buffer for decoded text; bytes[n] is always '\0' after tok_decode (not counted in n). */
typedef struct {
    char *bytes;
    size_t n, cap;
} tok_bytes;
void tok_bytes_free(tok_bytes *b);

/* Loads dir_or_file: a directory holding tokenizer.json, or the tokenizer.json path itself. On failure
 * returns false with err naming the file, the JSON path (e.g. "pre_tokenizer.pretokenizers[0].behavior")
 * and the reason. Takes ~0.3 s for Qwen3's 151k-token file (cJSON parse + hash tables). */
bool tok_load(const char *dir_or_file, tokenizer **out, s2d_err *err);
void tok_free(tokenizer *t);

/* Encodes len bytes of UTF-8 text and appends the ids to out. Returns the number of ids appended, or -1
 * with err set when the text is not valid UTF-8 (the offset is named). Text may contain NUL bytes. */
int tok_encode(const tokenizer *t, const char *text, size_t len, tok_ids *out, s2d_err *err);
/* Same into a caller buffer of cap ids: returns the count, or -1 (err set) on bad UTF-8 or when the
 * encoding needs more than cap ids. */
int tok_encode_buf(const tokenizer *t, const char *text, size_t len, int32_t *buf, int cap, s2d_err *err);

/* Decodes n ids into out (replacing its contents) as UTF-8 with U+FFFD for invalid sequences.
 * False with err naming the position when an id is out of range or has no token. */
bool tok_decode(const tokenizer *t, const int32_t *ids, size_t n, tok_bytes *out, s2d_err *err);
/* The raw decoded bytes of one token (not UTF-8 checked: a token may be part of a character), or NULL
 * when id has no token. Useful for streaming output. */
const char *tok_token_bytes(const tokenizer *t, int32_t id, size_t *len);

/* One past the largest id of any token (vocabulary or added), e.g. 151669 for Qwen3, 128256 for Llama 3.1. */
int tok_vocab_size(const tokenizer *t);
/* Copies the tokenizer side of a model directory from src (a directory with tokenizer.json, required, and
 * tokenizer_config.json, special_tokens_map.json, generation_config.json, chat_template.jinja, ... when present;
 * or a tokenizer.json file) into dst_dir, each file atomically. Without a tokenizer_config.json to copy, writes a
 * minimal one naming bos_token / eos_token (NULL: left out) so AutoTokenizer finds the stop token. */
bool tok_copy_files(const char *src, const char *dst_dir, const char *bos_token, const char *eos_token, s2d_err *err);
/* Id of a token given as written in tokenizer.json (an added token's content such as "<|im_end|>", or a
 * vocabulary entry in byte-level form such as "Ġthe"); -1 when absent. */
int32_t tok_token_id(const tokenizer *t, const char *token);
/* The token string of id as written in tokenizer.json, or NULL when id has no token. */
const char *tok_id_to_token(const tokenizer *t, int32_t id);

/* For tests and benchmarks: calls fn(piece, piece_len, ctx) for each pre-token of the normalized text of
 * one segment (no added-token splitting), using the fast matcher when use_fast_path is true (when the
 * file's Split regex is one it knows) or Oniguruma alone otherwise. Returns the number of pieces, or -1
 * with err set when the text is not valid UTF-8. */
long tok_pretokenize(const tokenizer *t, const char *text, size_t len, bool use_fast_path,
                     void (*fn)(const char *piece, size_t piece_len, void *ctx), void *ctx, s2d_err *err);
/* Whether the file's Split regex is served by the hand-written matcher (checked against Oniguruma). */
bool tok_has_fast_path(const tokenizer *t);
