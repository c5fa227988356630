/* generate.h: batched autoregressive generation with a KV cache and continuous batching.
 *
 * A generator owns n_slots KV-cache slots (model.h) and everything the loop needs (logits [n_slots, V], one
 * sampler per slot, token and slot lists), allocated once in generator_new. generator_run feeds prompts
 * through the slots: each prompt is prefilled into a free slot, then all active slots advance together with one
 * model_decode_step per token. A slot that finishes (a stop token, max_new_tokens, or its cache full) at once
 * takes the next waiting prompt, so the batch stays full until the prompts run out.
 *
 * Sampling for prompt i uses the stream (seed, seq_ids[i], position), position = index of the sampled token in
 * the full sequence (prompt length + k for the k-th new token). Every reduction in the model is within a row,
 * so a prompt's output depends only on (model, prompt, seq id, sampling params): never on the other prompts,
 * the slot it lands in, n_slots, or the thread count.
 *
 * Results come back in prompt order, CSR-packed: completion i is tokens[start[i] .. start[i+1]) with one
 * behaviour log-prob per token (sampler.h: after temperature and top-k/top-p filtering; for greedy, the model's
 * log-softmax). A stop token, when hit, is the last token of its completion.
 *
 * Repeated prompts are prefilled once per run and then copied from the cache (generator_share_prompts).
 *
 * Weights: each generator_run starts with model_kv_refresh_weights, so a model whose weights are all
 * bf16-exact runs prefill/decode from a bf16 copy (bitwise the same results, half the bytes per step), and a
 * model changed in place between runs (the pipeline's policy) is re-checked and re-copied: never stale. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"
#include "ops/sampler.h"

#define GEN_MAX_STOP 16

typedef enum { GEN_FINISH_STOP = 0, GEN_FINISH_LENGTH = 1 } gen_finish;
const char *gen_finish_name(gen_finish f); /* "stop" | "length" */

typedef struct {
    sampler_params sampling;
    int max_new_tokens;            /* >= 1 */
    int n_stop;                    /* stop token ids (0..GEN_MAX_STOP) */
    int32_t stop_ids[GEN_MAX_STOP];
} gen_params;

typedef struct {
    int n;             /* prompts */
    int *start;        /* [n + 1] CSR offsets into tokens / logprobs */
    int32_t *tokens;   /* [start[n]] completion ids */
    float *logprobs;   /* [start[n]] behaviour log-probs */
    gen_finish *finish; /* [n] */
    /* Counters of the last run (for benchmarks and logs). */
    long n_generated;      /* = start[n] */
    long n_decode_steps;   /* model_decode_step calls */
    long n_decode_rows;    /* rows summed over decode steps */
    long n_shared_prompts; /* prompts copied from a cached equal prompt instead of prefilled */
    double prefill_seconds, decode_seconds, sample_seconds;
    double weights_seconds; /* model_kv_refresh_weights at the start of the run (bf16 check / copy) */
} gen_result;

void gen_result_free(gen_result *r);

typedef struct generator generator;

/* n_slots concurrent sequences of at most max_len positions each (prompt + generated, <= the model's
 * max_position_embeddings). Allocates the KV cache and all loop buffers. False + err on bad sizes. */
bool generator_new(const model *m, int n_slots, int max_len, generator **out, s2d_err *err);
/* Shared prompts (on by default): within a run, a prompt equal to one a slot's cache already starts with (the
 * K samples of an eval problem, a GRPO group) copies that slot's cache rows and first-token logits instead of
 * being prefilled again: the same bits, no model cost. Off: every prompt is prefilled (tests compare the two). */
void generator_share_prompts(generator *g, bool on);
void generator_free(generator *g);

/* Generates a completion for each of n prompts (prompt i = prompt_tokens[prompt_start[i] .. prompt_start[i+1])).
 * seq_ids[i] keys prompt i's random stream (NULL: i). Bad input (empty prompt, prompt longer than max_len,
 * token out of the vocabulary, bad params) returns false with an error naming the prompt; nothing is
 * returned then. The result arrays are allocated here (before the loop); free with gen_result_free. */
bool generator_run(generator *g, const gen_params *params, int n, const int *prompt_start,
                   const int32_t *prompt_tokens, const uint64_t *seq_ids, gen_result *out, s2d_err *err);
